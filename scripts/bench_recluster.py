"""Recluster speed and memory at scale, and the watch daemon's memory beside a recluster.

    uv run python scripts/bench_recluster.py \
        [--home-100k /tmp/scale_bench/dlib_100000] [--home-1m /work/homes/synth-dlib-1000000] \
        [--dim512-faces 1000000] [--work /tmp/bench_recluster] [--skip daemon,512,1m]

In one run it prints:
1. `faceidx recluster` (the whole command: load vectors, cluster, reconcile, write) on a copy
   of a 100k-face and a 1M-face dlib (128-d) home: wall time and the process's peak RSS;
2. the clustering of 1M synthetic 512-d vectors with identity structure
   (indexer.clustering.synthetic; no 512-d home of 1M faces exists here, and building one
   through the store would take hours): wall time and peak RSS;
3. the kNN graph's neighbour recall against exact search (2000 sampled faces) at each size;
4. the watch daemon on the 1M home: its RSS when idle, and the peak RSS of the daemon plus its
   recluster child while one photo arrives and the daemon reclusters in the background, with
   the time a batch took to be indexed during that recluster.

Each measured step runs in a fresh child process (its peak RSS is its own, from wait4). Homes
are copied to --work before anything writes to them. The last line repeats every figure as
key=value.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "faces"


# ---------------------------------------------------------------- child steps (run in a child)
def _child_recluster(home: str) -> dict[str, Any]:
    from indexer import settings as settings_mod
    from indexer.recluster import recluster
    from indexer.store import Store

    settings = settings_mod.load({"home": home})
    t0 = time.perf_counter()
    with Store.open(settings) as store:
        report = recluster(store, settings)
    return {"seconds": time.perf_counter() - t0, "clusters": report.clusters,
            "faces": report.faces}


def _child_recall(home: str | None, faces: int, dim: int) -> dict[str, Any]:
    """kNN graph as the recluster builds it, and its recall on 2000 sampled faces."""
    from indexer.clustering.knn import KnnConfig, build_knn, neighbour_recall
    from indexer.clustering.params import ClusterParams

    x = _vectors(home, faces, dim)
    params = ClusterParams()
    t0 = time.perf_counter()
    graph = build_knn(x, params.knn_k + 1, KnnConfig(exact_max_faces=params.knn_exact_max_faces),
                      seed=params.seed)
    seconds = time.perf_counter() - t0
    near = params.attach_distance  # on dlib's scale, as these homes
    return {"knn_seconds": seconds, "recall": neighbour_recall(x, graph, 2000),
            "recall_near": neighbour_recall(x, graph, 2000, within=near), "near": near,
            "exact": graph.exact}


def _child_cluster(faces: int, dim: int) -> dict[str, Any]:
    from indexer.clustering import ClusterParams, cluster

    x = _vectors(None, faces, dim)
    t0 = time.perf_counter()
    result = cluster(x, "hdbscan", ClusterParams())
    return {"seconds": time.perf_counter() - t0, "clusters": result.n_clusters}


def _vectors(home: str | None, faces: int, dim: int) -> Any:
    if home is not None:
        from indexer import settings as settings_mod
        from indexer.store import Store

        with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
            return store.embeddings()[1]
    from indexer.clustering.synthetic import make_identities

    return make_identities(faces, dim, seed=0, max_size=max(50, faces // 100)).embeddings


def _child_main(step: str, args: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    if step == "recluster":
        out = _child_recluster(args[0])
    elif step == "recall":
        out = _child_recall(args[0] or None, int(args[1]), int(args[2]))
    else:
        out = _child_cluster(int(args[0]), int(args[1]))
    print(json.dumps(out))


# ---------------------------------------------------------------- the parent
def run_step(step: str, *args: str) -> dict[str, Any]:
    """Run one step in a fresh child; its JSON result plus wall time and peak RSS (MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", step, *args],
                            stdout=subprocess.PIPE, cwd=REPO, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"step {step} {args} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0
    result["peak_mb"] = usage.ru_maxrss / 1024.0
    return result


def copy_home(src: Path, work: Path, name: str) -> Path:
    dest = work / name
    if dest.exists():
        shutil.rmtree(dest)
    print(f"copying {src} to {dest} ...", file=sys.stderr, flush=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("ingest.lock*"))
    return dest


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """(RSS of pid, RSS of pid and all its descendants) in MB, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        p = int(entry)
        children.setdefault(int(fields["PPid"]), []).append(p)
        rss[p] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024.0
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0.0)
        todo.extend(children.get(p, []))
    return rss.get(pid, 0.0), total


def bench_daemon(home: Path, work: Path, idle_seconds: float) -> dict[str, float]:
    """Daemon idle RSS on `home`, then its peak (with the recluster child) while a photo
    arrives and a background recluster runs; and how long that photo took to be indexed."""
    folder = Path(tempfile.mkdtemp(prefix="watched.", dir=work))
    env = {**os.environ, "FACEIDX_HOME": str(home), "FACEIDX_RECLUSTER_EVERY": "1",
           "FACEIDX_RECLUSTER_INTERVAL": "0", "FACEIDX_WATCH_SETTLE": "0.5"}
    log_path = work / "daemon.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.app", "watch", "-v", str(folder)],
                                cwd=REPO, env=env, stderr=log, stdout=log)
    try:
        _wait_log(log_path, "watching ", proc)
        time.sleep(idle_seconds)
        idle, _ = tree_rss_mb(proc.pid)
        photos = sorted(PHOTO.rglob("*.jpg"))[:2]
        t0 = time.monotonic()
        shutil.copy2(photos[0], folder)
        _wait_log(log_path, "reclustering in the background", proc)
        started = time.monotonic()
        shutil.copy2(photos[1], folder)  # arrives while the recluster runs
        peak_daemon = peak_all = 0.0
        indexed_during = None
        while "recluster done" not in log_path.read_text():
            own, total = tree_rss_mb(proc.pid)
            peak_daemon, peak_all = max(peak_daemon, own), max(peak_all, total)
            if indexed_during is None and log_path.read_text().count("indexed 1 file") >= 2:
                indexed_during = time.monotonic() - started
            if proc.poll() is not None:
                raise SystemExit(f"the daemon died; see {log_path}")
            time.sleep(0.5)
        recluster_s = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"daemon_idle_mb": idle, "daemon_peak_mb": peak_daemon,
            "daemon_plus_recluster_peak_mb": peak_all, "background_recluster_s": recluster_s,
            "photo_indexed_during_recluster_s": -1.0 if indexed_during is None
            else indexed_during, "first_photo_to_recluster_s": started - t0}


def _wait_log(path: Path, text: str, proc: subprocess.Popen[Any], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"the daemon ended; see {path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {text!r} in {path}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home-100k", default="/tmp/scale_bench/dlib_100000")
    ap.add_argument("--home-1m", default="/work/homes/synth-dlib-1000000")
    ap.add_argument("--dim512-faces", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/bench_recluster")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--skip", default="", help="comma list of: 100k, 1m, 512, daemon, recall")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child_main(args.child[0], args.child[1:])
        return 0
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    figures: dict[str, float] = {}
    homes = [("100k", args.home_100k), ("1m", args.home_1m)]
    for label, src in homes:
        if label in skip:
            continue
        home = copy_home(Path(src), work, f"home_{label}")
        r = run_step("recluster", str(home))
        print(f"faceidx recluster, {r['faces']} faces, 128-d (dlib home {src}): "
              f"{r['wall']:.1f} s wall ({r['seconds']:.1f} s in recluster()), "
              f"peak RSS {r['peak_mb']:.0f} MB, {r['clusters']} people", flush=True)
        figures[f"recluster_{label}_128_s"] = round(r["wall"], 1)
        figures[f"recluster_{label}_128_peak_mb"] = round(r["peak_mb"])
        if "recall" not in skip:
            k = run_step("recall", str(home), "0", "0")
            print(f"  kNN graph {'exact' if k['exact'] else 'IVF'}: {k['knn_seconds']:.1f} s, "
                  f"neighbour recall {k['recall']:.4f} (2000 sampled faces), "
                  f"{k['recall_near']:.4f} of neighbours within {k['near']}", flush=True)
            figures[f"knn_{label}_128_s"] = round(k["knn_seconds"], 1)
            figures[f"knn_recall_{label}_128"] = round(k["recall"], 4)
            figures[f"knn_recall_near_{label}_128"] = round(k["recall_near"], 4)
        if label == "1m" and "daemon" not in skip:
            d = bench_daemon(home, work, args.idle_seconds)
            print(f"watch daemon on the 1M home: idle RSS {d['daemon_idle_mb']:.0f} MB; during "
                  f"a background recluster ({d['background_recluster_s']:.0f} s) the daemon "
                  f"peaked at {d['daemon_peak_mb']:.0f} MB and the daemon plus its recluster "
                  f"child at {d['daemon_plus_recluster_peak_mb']:.0f} MB; a photo copied "
                  f"during the recluster was indexed after "
                  f"{d['photo_indexed_during_recluster_s']:.1f} s (-1: not before it ended)",
                  flush=True)
            figures.update({k: round(v, 1) for k, v in d.items()})
        shutil.rmtree(home, ignore_errors=True)
    if "512" not in skip:
        n = args.dim512_faces
        r = run_step("cluster", str(n), "512")
        print(f"clustering {n} synthetic 512-d faces (identity structure; no 512-d home): "
              f"{r['wall']:.1f} s wall ({r['seconds']:.1f} s clustering), peak RSS "
              f"{r['peak_mb']:.0f} MB, {r['clusters']} clusters", flush=True)
        figures["cluster_1m_512_s"] = round(r["wall"], 1)
        figures["cluster_1m_512_peak_mb"] = round(r["peak_mb"])
        if "recall" not in skip:
            k = run_step("recall", "", str(n), "512")
            print(f"  kNN graph {'exact' if k['exact'] else 'IVF'}: {k['knn_seconds']:.1f} s, "
                  f"neighbour recall {k['recall']:.4f}, {k['recall_near']:.4f} of neighbours "
                  f"within {k['near']}", flush=True)
            figures["knn_1m_512_s"] = round(k["knn_seconds"], 1)
            figures["knn_recall_1m_512"] = round(k["recall"], 4)
            figures["knn_recall_near_1m_512"] = round(k["recall_near"], 4)
    print(f"bench_recluster ran {time.perf_counter() - t_all:.0f} s")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
