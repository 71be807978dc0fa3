"""Every figure of issue 11's table at 10k, 100k and 1M synthetic faces, in one run.

    uv run python scripts/bench_scale.py --root /tmp/faceidx_scale \
        [--sizes 10000,100000,1000000] [--model dlib] [--copy-from 1000000=/work/homes/HOME] \
        [--skip recluster,export] [--recluster-max N] [--export-max N] [--like STATS]

Homes are `<root>/<model>_<N>`: reused when they exist, else copied from `--copy-from N=DIR`
(a home built before, left as it is), else built with scripts/synthetic_home.py's code. The
project's own sources are byte-compiled first, as a user's Python does on its first run (this
environment sets PYTHONDONTWRITEBYTECODE; `uv sync` compiles site-packages, see pyproject).
Per size it prints: cold `faceidx status`, `people`, `history` and `name` (wall and CPU
seconds of a fresh process through the `faceidx` entry point, best of two; the first three
with the home's summary.json current, `status` again as the first read after a write (the
writer left the summary current), and `status` with no summary, reading the catalog);
FAISS search per query face and recall@10 against an exact scan (200 queries near stored
faces, one thread, every IVF list mapped once before, as in a long-running process), after
rebuilding the home's search index when it is not of the kind and size the settings ask for
(a home copied from an older version: its build time is printed); with `--like STATS`, the
same on as many faces fitted to real ones (indexer.synthetic_fit; the statistics from
`scripts/bench_search.py --real HOME --stats-out STATS`), built with the home's settings, since
the homes' isotropic faces are harder to search than real ones (bench_search.py); each with
its verdict against the target (under 5 ms at recall@10 0.98);
the `query` command's own overhead beyond the model: `faceidx query --photo` (default an LFW
photo of the shared test data) against a process that only imports, loads and runs its model
on that photo, in 9 interleaved rounds (the best of each, and the median of the rounds'
differences), and, for comparison, a fresh process doing only the catalog side that `query`
runs in a child process beside the model (imports, opening the index, searching one face,
judging its nearest person); store writes (faces/s, 10k faces added in
batches of 1,000 and removed again);
`faceidx recluster` and `faceidx export` (wall, CPU, peak RSS; skipped above --recluster-max /
--export-max). `--skip` leaves out any of: light, search, query, writes, recluster, export.
The last table gives each figure's growth per 10x faces. Figures are wall clock on the
machine as it is, each also in CPU seconds (`*_cpu_*`), which crowding inflates far less.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.store import NewImage, Store
from indexer.store.vectors import faiss_nlist
from indexer.synthetic_home import build
from indexer.types import FaceResult

REPO = Path(__file__).resolve().parent.parent
FACEIDX = [sys.executable, "-c", "import sys; from cli.fastpath import main; "
           "sys.argv[0] = 'faceidx'; main()"]  # the `faceidx` entry point (pyproject)
QUERY_PROBE = """
import sys, time
t0 = time.perf_counter()
import cli.fastpath, cli.light  # the query command's imports (its model aside)
import numpy as np
from indexer import service, settings as settings_mod
q = np.load(sys.argv[2])
t1 = time.perf_counter()
service.match_vectors(settings_mod.load({"home": sys.argv[1]}), q[:1], 10)
t2 = time.perf_counter()
print(f"{t2 - t0:.3f} {t2 - t1:.3f}")
"""
MODEL_PROBE = """
import sys
from pathlib import Path
from indexer import settings as settings_mod
from indexer.imageio import decode
from indexer.models import create_model
settings = settings_mod.load({"home": sys.argv[1]})
model = create_model(sys.argv[3], settings)
model.load()
print(len(model.analyze([decode(Path(sys.argv[2]), max_pixels=10**8, max_bytes=10**8)])[0]))
"""
PHOTO = REPO.parent / "shared" / "faces" / "lfw" / "Aaron_Guiel" / "Aaron_Guiel_0001.jpg"
PARTS = ("light", "search", "query", "writes", "recluster", "export")
QUERY_ROUNDS = 9  # `query` against its model alone, interleaved
SEARCH_MS, SEARCH_RECALL = 5.0, 0.98  # issue 11's search target, per query face at 1M


def run(cmd: list[str], home: Path) -> tuple[float, float, float | None, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS in MB and stdout of a fresh
    process. CPU seconds show what a command costs when other work crowds the cores."""
    env = {**os.environ, "FACEIDX_HOME": str(home), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=REPO, env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-3:])} failed: {out.stderr[-2000:]}")

    def field(name: str) -> float | None:
        found = re.search(rf"{name}: ([0-9.]+)", out.stderr)
        return float(found.group(1)) if found else None

    cpu = (field(r"User time \(seconds\)") or 0.0) + (field(r"System time \(seconds\)") or 0.0)
    rss = field(r"Maximum resident set size \(kbytes\)")
    return seconds, cpu, None if rss is None else rss / 1024, out.stdout


def measure_writes(home: Path, n: int = 10_000, batch: int = 1_000) -> tuple[float, float]:
    """Faces per wall second and per CPU second through add_images/add_faces_many; the faces
    are removed afterwards."""
    settings = settings_mod.load({"home": home})
    rng = np.random.default_rng(123)
    with Store.open(settings) as store:
        dim = store.model.dim
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        image_ids: list[int] = []
        start, cpu = time.perf_counter(), time.process_time()
        for b in range(0, n, batch):
            with store.transaction() as con:
                ids = store.add_images(con, [NewImage(
                    path=f"synthetic://bench-writes/{b + i}.jpg", size=1, mtime=1.0,
                    content_hash=f"bench-{b + i}", status="ok") for i in range(batch)])
                store.add_faces_many(con, [(i, [FaceResult(
                    bbox=(1.0, 1.0, 50.0, 50.0), landmarks=(0.0,) * 10, score=0.9,
                    embedding=v)]) for i, v in zip(ids, vectors[b:b + batch], strict=True)])
                image_ids += ids
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        with store.transaction() as con:
            store.remove_images(con, image_ids)
    return n / seconds, n / cpu


def noisy_queries(vectors: np.ndarray, n_queries: int = 200) -> np.ndarray:
    """Query faces near stored ones: n_queries of `vectors` (a fixed pick) plus 0.02 noise,
    renormalised."""
    rng = np.random.default_rng(5)
    pick = rng.choice(len(vectors), n_queries, replace=False)
    queries = vectors[pick] + 0.02 * rng.standard_normal((n_queries, vectors.shape[1]),
                                                         dtype=np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def fitted_faces(stats_path: Path, n: int, n_queries: int = 200
                 ) -> tuple[np.ndarray, np.ndarray]:
    """n faces fitted to real ones (indexer.synthetic_fit, the statistics in stats_path) and
    n_queries more held out (a fixed pick) as queries: (base, queries)."""
    from indexer.synthetic_fit import EmbeddingStats, make_like

    faces = make_like(EmbeddingStats.load(stats_path), n + n_queries, seed=7).embeddings
    held = np.zeros(len(faces), bool)
    held[np.random.default_rng(7).choice(len(faces), n_queries, replace=False)] = True
    return np.ascontiguousarray(faces[~held]), np.ascontiguousarray(faces[held])


def exact_top10(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The positions in vectors of each query's 10 nearest, by an exact scan."""
    sims = np.concatenate([queries @ vectors[s:s + 200_000].T
                           for s in range(0, len(vectors), 200_000)], axis=1)
    return np.argpartition(-sims, 10, axis=1)[:, :10]


def timed_search(search, queries: np.ndarray  # type: ignore[no-untyped-def]
                 ) -> tuple[list[np.ndarray], float, float]:
    """Search each query alone through search(q) -> ids of its 10 nearest: what it found, and
    the wall and CPU ms per query."""
    got = []
    t0, c0 = time.perf_counter(), time.process_time()
    for q in queries:
        got.append(search(q[None, :]))
    per_query = (time.perf_counter() - t0) / len(queries)
    cpu_per_query = (time.process_time() - c0) / len(queries)
    return got, per_query * 1000, cpu_per_query * 1000


def recall10(got: list[np.ndarray], exact: np.ndarray) -> float:
    """Recall@10 of what a search found against each query's true 10 ids."""
    return float(np.mean([len(set(g.tolist()) & set(t.tolist())) / 10
                          for g, t in zip(got, exact, strict=True)]))


def measure_search(home: Path, n_queries: int = 200) -> dict[str, float]:
    settings = settings_mod.load({"home": home})
    with Store.open(settings, read_only=True) as store:
        ids, vectors = store.embeddings()
        queries = noisy_queries(vectors, n_queries)
        t0 = time.perf_counter()
        index = store.faiss_index()
        load = time.perf_counter() - t0
        if index.is_ivf:  # map every list once, as a long-running process (web, daemon) has
            probe, index.nprobe = index.nprobe, faiss_nlist(index.base)
            index.search(queries[:2], 10)
            index.nprobe = probe
        got, ms, cpu_ms = timed_search(lambda q: index.search(q, 10)[1][0], queries)
        recall = recall10(got, ids[exact_top10(queries, vectors)])
    np.save(home / "bench_queries.npy", queries[:5])
    return {"faiss_load_s": load, "search_ms": ms, "search_cpu_ms": cpu_ms, "recall10": recall,
            "nprobe": float(index.nprobe) if index.is_ivf else 0.0,
            "nlist": float(faiss_nlist(index.base)) if index.is_ivf else 0.0}


def measure_fitted_search(home: Path, n: int, stats_path: Path, n_queries: int = 200
                          ) -> dict[str, float]:
    """Search as measure_search, on n faces fitted to real ones (fitted_faces) in place of the
    home's isotropic ones: the base built and searched by the store's own code with the
    home's settings (kind, lists, lists probed, re-rank depth); 200 held-out fitted faces as
    queries, exact search as the truth."""
    from indexer.store.faceindex import FaceIndex, build_base, ivf_lists, refined

    settings = settings_mod.load({"home": home})
    base, queries = fitted_faces(stats_path, n, n_queries)
    ids = np.arange(len(base), dtype=np.int64)
    nlist = ivf_lists(n) if n >= settings.faiss_ivf_min_faces else None
    t0, c0 = time.perf_counter(), time.process_time()
    index = build_base(ids, base, base.shape[1], nlist, settings.faiss_ivf_kind)
    build = time.perf_counter() - t0, time.process_time() - c0
    view = FaceIndex(index, ids, base.shape[1], settings.faiss_nprobe, ids_sorted=True,
                     vectors=base if refined(index) else None, refine=settings.faiss_refine)
    view.search(queries[:2], 10)
    got, ms, cpu_ms = timed_search(lambda q: view.search(q, 10)[1][0], queries)
    recall = recall10(got, exact_top10(queries, base))
    return {"fitted_search_ms": ms, "fitted_search_cpu_ms": cpu_ms, "fitted_recall10": recall,
            "fitted_build_s": build[0], "fitted_build_cpu_s": build[1]}


def search_verdict(ms: float, recall: float) -> str:
    met = ms < SEARCH_MS and recall >= SEARCH_RECALL
    return (f"{'meets' if met else 'MISSES'} the target (under {SEARCH_MS:.0f} ms at recall@10 "
            f"{SEARCH_RECALL})")


def home_for(root: Path, n: int, model: str, copy_from: dict[int, Path]) -> tuple[Path, dict]:
    """The home of n faces: reused, copied from a home built before, or built now."""
    home = root / f"{model}_{n}"
    fig: dict[str, float] = {}
    settings = settings_mod.load({"home": home})
    if settings.catalog_path.exists():
        return home, fig
    if n in copy_from:
        t0 = time.perf_counter()
        shutil.copytree(copy_from[n], home)
        print(f"[{n}] copied {copy_from[n]} to {home} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        return home, fig
    t0 = time.perf_counter()
    report = build(settings, n, model)
    fig["build_s"] = time.perf_counter() - t0
    fig["build_faces_per_s"] = report.faces_per_second
    print(f"[{n}] built {home} in {fig['build_s']:.0f} s "
          f"({report.faces_per_second} faces/s through the store)", flush=True)
    return home, fig


def measure_light(home: Path, n: int) -> dict[str, float]:
    """Cold `status`, `people`, `history` (the home's summary.json current, as every writer
    leaves it) and `name` (a write: the first naming of an unnamed person, which pins its
    members, and the rename of a named one; `name_s` is the slower), best of two each;
    `status` as the first read after a write; and `status` with summary.json removed, when it
    reads the catalog (after a writer that kept no summary) and writes the file again."""
    fig: dict[str, float] = {}

    def best(key: str, runs: list[tuple[float, float, float | None, str]], what: str) -> None:
        wall, cpu = min((r[:2] for r in runs), key=lambda r: r[0])
        fig[key], fig[key.replace("_s", "_cpu_s")] = wall, cpu
        print(f"[{n}] {what}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    run(FACEIDX + ["status"], home)  # after the build or copy: reads the catalog
    for key, cmd in (("status_s", ["status"]), ("people_s", ["people"]),
                     ("history_s", ["history"])):
        best(key, [run(FACEIDX + cmd, home) for _ in range(2)], cmd[0])
    unnamed = [p["cluster_id"] for p in json.loads(run(FACEIDX + ["people", "--json"], home)[3])
               if not p["name"]]
    first, renamed, stale = [], [], []
    for i in range(2):  # a first naming pins the cluster's members; a rename changes the name
        first.append(run(FACEIDX + ["name", str(unnamed[i]), f"Bench Person {i + 1}"], home))
        stale.append(run(FACEIDX + ["status"], home))
        renamed.append(run(FACEIDX + ["name", "Synthetic Person 1", f"Bench Renamed {i + 1}"],
                           home))
        run(FACEIDX + ["name", f"Bench Renamed {i + 1}", "Synthetic Person 1"], home)
    best("name_first_s", first, "name, first naming of an unnamed person")
    best("name_rename_s", renamed, "name, renaming a named person")
    fig["name_s"] = max(fig["name_first_s"], fig["name_rename_s"])
    fig["name_cpu_s"] = max(fig["name_first_cpu_s"], fig["name_rename_cpu_s"])
    best("status_after_write_s", stale, "status, first read after a write")
    unsummarised = []
    for _ in range(2):  # no summary (a writer that kept none): status reads the catalog
        (home / "summary.json").unlink(missing_ok=True)
        unsummarised.append(run(FACEIDX + ["status"], home))
    best("status_catalog_s", unsummarised, "status, no summary (reads the catalog)")
    return fig


def bench_size(root: Path, n: int, model: str, args: argparse.Namespace) -> dict[str, float]:
    home, fig = home_for(root, n, model, args.copy_from)
    skip = args.skip
    if "light" not in skip:
        fig.update(measure_light(home, n))
    if "search" not in skip or "query" not in skip:
        t0, c0 = time.perf_counter(), time.process_time()
        with Store.open(settings_mod.load({"home": home})) as store:
            if store.rebuild_faiss_if_unfit():  # e.g. a home copied from an older version
                fig["faiss_build_s"] = time.perf_counter() - t0
                fig["faiss_build_cpu_s"] = time.process_time() - c0
                print(f"[{n}] search index rebuilt from the catalog as the settings ask "
                      f"({fig['faiss_build_s']:.0f} s, {fig['faiss_build_cpu_s']:.0f} s CPU "
                      f"in this process)", flush=True)
        fig.update(measure_search(home))
        kind = "exact" if not fig["nprobe"] else \
            f"IVF {settings_mod.load({'home': home}).faiss_ivf_kind}, {fig['nprobe']:.0f} of " \
            f"{fig['nlist']:.0f} lists"
        print(f"[{n}] search {fig['search_ms']:.2f} ms/query ({fig['search_cpu_ms']:.2f} CPU), "
              f"recall@10 {fig['recall10']:.3f} (nprobe {fig['nprobe']:.0f}; 0: exact), "
              f"index load {fig['faiss_load_s']:.2f} s ({kind}) on the home's isotropic "
              f"faces: {search_verdict(fig['search_ms'], fig['recall10'])}", flush=True)
        if args.like is not None:
            fig.update(measure_fitted_search(home, n, args.like))
            print(f"[{n}] search on {n:,} faces fitted to real ones ({args.like.name}), the "
                  f"same settings: {fig['fitted_search_ms']:.2f} ms/query "
                  f"({fig['fitted_search_cpu_ms']:.2f} CPU), recall@10 "
                  f"{fig['fitted_recall10']:.3f} (built in {fig['fitted_build_s']:.0f} s): "
                  f"{search_verdict(fig['fitted_search_ms'], fig['fitted_recall10'])}",
                  flush=True)
    if "query" not in skip:
        probes = [run([sys.executable, "-c", QUERY_PROBE, str(home),
                       str(home / "bench_queries.npy")], home) for _ in range(2)]
        wall, cpu, _, out = min(probes, key=lambda r: r[0])
        found = re.findall(r"^([0-9.]+) ([0-9.]+)$", out, re.M)
        if not found:
            raise RuntimeError(f"the query probe printed no timing: {out[-500:]!r}")
        fig["query_overhead_s"], fig["query_overhead_cpu_s"] = float(found[-1][0]), cpu
        fig["query_in_process_s"] = float(found[-1][1])
        print(f"[{n}] the catalog side alone (no model; `query` runs it in a child process "
              f"beside the model), fresh process: "
              f"{fig['query_overhead_s']:.2f} s ({cpu:.2f} s CPU for the whole process; "
              f"opening the index, searching and judging in process "
              f"{fig['query_in_process_s']:.2f} s)", flush=True)
        if args.photo.is_file():  # the command as a user runs it, against its model alone
            # interleaved rounds: a drift of the machine's speed hits both sides alike
            rounds = [(run(FACEIDX + ["query", str(args.photo)], home)[:2],
                       run([sys.executable, "-c", MODEL_PROBE, str(home), str(args.photo),
                            model], home)[:2]) for _ in range(QUERY_ROUNDS)]
            cmd = min((r[0] for r in rounds), key=lambda r: r[0])
            alone = min((r[1] for r in rounds), key=lambda r: r[0])
            fig["query_cmd_s"], fig["query_model_alone_s"] = cmd[0], alone[0]
            fig["query_beyond_model_s"] = cmd[0] - alone[0]
            fig["query_beyond_model_median_s"] = float(np.median(
                [c[0] - a[0] for c, a in rounds]))
            print(f"[{n}] `faceidx query PHOTO` {cmd[0]:.2f} s ({cmd[1]:.2f} CPU), its model "
                  f"alone (import, load, analyze PHOTO) {alone[0]:.2f} s ({alone[1]:.2f} CPU): "
                  f"query overhead beyond the model {fig['query_beyond_model_s']:.2f} s "
                  f"(best of {QUERY_ROUNDS} interleaved rounds each; median of the rounds' "
                  f"differences {fig['query_beyond_model_median_s']:.2f} s)", flush=True)
    if "writes" not in skip:
        fig["writes_faces_per_s"], fig["writes_faces_per_cpu_s"] = measure_writes(home)
        print(f"[{n}] store writes: {fig['writes_faces_per_s']:.0f} faces/s "
              f"({fig['writes_faces_per_cpu_s']:.0f} per CPU second)", flush=True)
    if "recluster" not in skip and n <= args.recluster_max:
        fig["recluster_s"], fig["recluster_cpu_s"], fig["recluster_mb"], _ = run(
            FACEIDX + ["recluster"], home)
        print(f"[{n}] recluster: {fig['recluster_s']:.1f} s, {fig['recluster_cpu_s']:.1f} s "
              f"CPU, {fig['recluster_mb']:.0f} MB", flush=True)
    if "export" not in skip and n <= args.export_max:
        out = root / f"export_{model}_{n}"
        shutil.rmtree(out, ignore_errors=True)
        fig["export_s"], fig["export_cpu_s"], fig["export_mb"], _ = run(
            FACEIDX + ["export", str(out)], home)
        print(f"[{n}] export: {fig['export_s']:.1f} s, {fig['export_cpu_s']:.1f} s CPU, "
              f"{fig['export_mb']:.0f} MB", flush=True)
    return fig


def compile_sources() -> None:
    """Byte-compile indexer/, cli/ and web/ the way a user's Python does on its first run."""
    t0 = time.perf_counter()
    for package in ("indexer", "cli", "web"):
        compileall.compile_dir(REPO / package, quiet=1)
    print(f"byte-compiled the project's sources ({time.perf_counter() - t0:.1f} s); "
          "site-packages come compiled from `uv sync` (compile-bytecode in pyproject)",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--model", default="dlib")
    ap.add_argument("--recluster-max", type=int, default=1_000_000)
    ap.add_argument("--export-max", type=int, default=1_000_000)
    ap.add_argument("--copy-from", action="append", default=[], metavar="N=DIR",
                    help="start the home of N faces as a copy of DIR (a home built before)")
    ap.add_argument("--photo", type=Path, default=PHOTO,
                    help="the photo `faceidx query` is timed on (skipped when absent)")
    ap.add_argument("--like", type=Path, default=None, metavar="STATS",
                    help="also measure search on faces fitted to real ones (statistics from "
                    "`scripts/bench_search.py --real HOME --stats-out STATS`)")
    ap.add_argument("--skip", default="", help=f"comma-separated parts to leave out: "
                    f"{', '.join(PARTS)}")
    args = ap.parse_args(argv)
    args.skip = {p for p in args.skip.split(",") if p}
    if args.skip - set(PARTS):
        ap.error(f"unknown part(s) {', '.join(sorted(args.skip - set(PARTS)))}")
    args.copy_from = {int(item.split("=", 1)[0]): Path(item.split("=", 1)[1])
                      for item in args.copy_from}
    compile_sources()
    started = time.perf_counter()
    args.root.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    figures = {n: bench_size(args.root, n, args.model, args) for n in sizes}
    keys = sorted({k for f in figures.values() for k in f})
    print("\nfigure".ljust(22) + "".join(f"{n:>14,}" for n in sizes) + "   growth per 10x")
    for key in keys:
        row = [figures[n].get(key) for n in sizes]
        growth = [f"{b / a:.1f}x" for a, b in zip(row, row[1:], strict=False)
                  if a and b]
        print(key.ljust(21) + "".join(f"{v:>14.3f}" if v is not None else f"{'-':>14}"
                                      for v in row) + "   " + ", ".join(growth))
    print(json.dumps({str(n): f for n, f in figures.items()}))
    print(f"bench_scale: {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
