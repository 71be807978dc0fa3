"""Every figure of issue 11's table at 10k, 100k and 1M synthetic faces, in one run.

    uv run python scripts/bench_scale.py --root /tmp/faceidx_scale [--sizes 10000,100000,1000000]
        [--model dlib] [--recluster-max 100000] [--export-max 100000]

Homes are built with scripts/synthetic_home.py's code (`<root>/<model>_<N>`) or reused when they
exist. Per size it prints: cold `faceidx status`, `people`, `history` and `name` (wall seconds
of a fresh process each); `faceidx recluster` and `faceidx export` (wall seconds and peak RSS,
skipped above --recluster-max / --export-max); FAISS search per query face and recall@10
against an exact scan; the `query` command's overhead beyond the model (a fresh process that
opens the index and searches one face); store writes (faces/s, 10k faces added in batches of
1,000 and then removed again). The last table gives each figure's growth per 10x faces.
Other processes share the machine: figures are wall clock on it as it is, and each also in
CPU seconds (`*_cpu_*`), which crowding inflates far less.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from indexer import settings as settings_mod
from indexer.store import NewImage, Store
from indexer.synthetic_home import build
from indexer.types import FaceResult

REPO = Path(__file__).resolve().parent.parent
FACEIDX = [sys.executable, "-c", "import sys; from cli.app import main; sys.argv[0] = "
           "'faceidx'; main()"]
QUERY_PROBE = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from indexer import settings as settings_mod
from indexer.store import Store
settings = settings_mod.load({"home": sys.argv[1]})
q = np.load(sys.argv[2])
with Store.open(settings, read_only=True) as store:
    t1 = time.perf_counter()
    store.search(q[:1], 10)
    t2 = time.perf_counter()
print(f"{t2 - t0:.3f} {t2 - t1:.3f}")
"""


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


def measure_search(home: Path, n_queries: int = 200) -> dict[str, float]:
    settings = settings_mod.load({"home": home})
    with Store.open(settings, read_only=True) as store:
        ids, vectors = store.embeddings()
        rng = np.random.default_rng(5)
        pick = rng.choice(len(ids), n_queries, replace=False)
        queries = vectors[pick] + 0.02 * rng.standard_normal((n_queries, vectors.shape[1]),
                                                             dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        t0 = time.perf_counter()
        index = store.faiss_index()
        load = time.perf_counter() - t0
        got = []
        t0, c0 = time.perf_counter(), time.process_time()
        for q in queries:
            got.append(index.search(q[None, :], 10)[1][0])
        per_query = (time.perf_counter() - t0) / n_queries
        cpu_per_query = (time.process_time() - c0) / n_queries
    sims = np.concatenate([queries @ vectors[s:s + 200_000].T
                           for s in range(0, len(vectors), 200_000)], axis=1)
    exact = ids[np.argpartition(-sims, 10, axis=1)[:, :10]]
    recall = float(np.mean([len(set(g.tolist()) & set(t.tolist())) / 10
                            for g, t in zip(got, exact, strict=True)]))
    np.save(home / "bench_queries.npy", queries[:5])
    return {"faiss_load_s": load, "search_ms": per_query * 1000,
            "search_cpu_ms": cpu_per_query * 1000, "recall10": recall}


def bench_size(root: Path, n: int, model: str, args: argparse.Namespace) -> dict[str, float]:
    home = root / f"{model}_{n}"
    settings = settings_mod.load({"home": home})
    fig: dict[str, float] = {}
    if not settings.catalog_path.exists():
        t0 = time.perf_counter()
        report = build(settings, n, model)
        fig["build_s"] = time.perf_counter() - t0
        fig["build_faces_per_s"] = report.faces_per_second
        print(f"[{n}] built {home} in {fig['build_s']:.0f} s "
              f"({report.faces_per_second} faces/s)", flush=True)
    for name, cmd in (("status_s", ["status"]), ("people_s", ["people"]),
                      ("history_s", ["history"]),
                      ("name_s", ["name", "Synthetic Person 1", "Synthetic Person 1"])):
        best = min((run(FACEIDX + cmd, home)[:2] for _ in range(2)), key=lambda r: r[0])
        fig[name], fig[name.replace("_s", "_cpu_s")] = best
        print(f"[{n}] {cmd[0]}: {best[0]:.2f} s wall, {best[1]:.2f} s CPU", flush=True)
    fig.update(measure_search(home))
    print(f"[{n}] search {fig['search_ms']:.2f} ms/query ({fig['search_cpu_ms']:.2f} CPU), "
          f"recall@10 {fig['recall10']:.3f}, "
          f"index load {fig['faiss_load_s']:.2f} s", flush=True)
    probe = run([sys.executable, "-c", QUERY_PROBE, str(home), str(home / "bench_queries.npy")],
                home)[3].split()
    fig["query_overhead_s"], fig["query_in_process_s"] = float(probe[0]), float(probe[1])
    print(f"[{n}] query overhead beyond the model: {fig['query_overhead_s']:.2f} s "
          f"(open + search in process {fig['query_in_process_s']:.2f} s)", flush=True)
    fig["writes_faces_per_s"], fig["writes_faces_per_cpu_s"] = measure_writes(home)
    print(f"[{n}] store writes: {fig['writes_faces_per_s']:.0f} faces/s "
          f"({fig['writes_faces_per_cpu_s']:.0f} per CPU second)", flush=True)
    if n <= args.recluster_max:
        fig["recluster_s"], fig["recluster_cpu_s"], fig["recluster_mb"], _ = run(
            FACEIDX + ["recluster"], home)
        print(f"[{n}] recluster: {fig['recluster_s']:.1f} s, {fig['recluster_mb']:.0f} MB",
              flush=True)
    if n <= args.export_max:
        out = root / f"export_{model}_{n}"
        fig["export_s"], fig["export_cpu_s"], fig["export_mb"], _ = run(
            FACEIDX + ["export", str(out)], home)
        print(f"[{n}] export: {fig['export_s']:.1f} s, {fig['export_mb']:.0f} MB", flush=True)
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--model", default="dlib")
    ap.add_argument("--recluster-max", type=int, default=100_000)
    ap.add_argument("--export-max", type=int, default=100_000)
    args = ap.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
