"""Recluster speed and memory at scale, and the watch daemon's memory beside a recluster.

    uv run python scripts/bench_recluster.py \
        [--home-100k /tmp/scale_bench/dlib_100000] [--home-1m /work/homes/synth-dlib-1000000] \
        [--dim512-faces 1000000] [--work /tmp/bench_recluster] [--skip daemon,512,1m]

In one run it prints:
1. `faceidx recluster` (the whole command: load vectors, cluster, reconcile, write) on a copy
   of a 100k-face and a 1M-face home (dlib, 128-d, by default): wall time and the process's
   peak RSS. For the whole command at 512-d, pass a facenet home as --home-1m (`uv run python
   scripts/synthetic_home.py --faces 1000000 --model facenet --home DIR`: 8 min here, peak
   RSS 14.8 GB, 4.6 GB on disk) with `--skip 100k,512,daemon,recall`;
2. the clustering alone of 1M synthetic 512-d vectors with identity structure
   (indexer.clustering.synthetic, no photo groups, dlib's distances): wall time and peak RSS
   (and the peak before the clustering started, while the vectors were made: a peak above it
   is the clustering's);
3. the kNN graph's neighbour recall against exact search (2000 sampled faces) at each size;
4. the watch daemon on a copy of the 1M home (its search index first brought to the current
   kind): its RSS when idle; then one photo starts a background recluster and more photos are
   dropped into the watched folder while it runs (the first at once, during its snapshot, then
   every --drop-every seconds): how long each took to become searchable, how long the
   recluster child held the catalog (all told, for its snapshot, and at most at once), and the
   peak RSS of the daemon, of the child and of both together. `--skip 100k,1m,512,recall`
   runs only this step.

Each measured step runs in a fresh child process (its peak RSS is its own, from wait4). Homes
are copied to --work before anything writes to them. The last line repeats every figure as
key=value.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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
        model, dim = store.model.name, store.model.dim
    return {"seconds": time.perf_counter() - t0, "clusters": report.clusters,
            "faces": report.faces, "model": model, "dim": dim}


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
    made_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    result = cluster(x, "hdbscan", ClusterParams())
    return {"seconds": time.perf_counter() - t0, "clusters": result.n_clusters,
            "vectors_peak_mb": made_mb}


def _vectors(home: str | None, faces: int, dim: int) -> Any:
    if home is not None:
        from indexer import settings as settings_mod
        from indexer.store import Store

        with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
            return store.embeddings()[1]
    from indexer.clustering.synthetic import make_identities

    return make_identities(faces, dim, seed=0, max_size=max(50, faces // 100)).embeddings


def _child_prepare(home: str) -> dict[str, Any]:
    from indexer import settings as settings_mod
    from indexer.store import Store

    with Store.open(settings_mod.load({"home": home})) as store:
        return {"rebuilt": store.rebuild_faiss_if_unfit()}


def _child_main(step: str, args: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    if step == "recluster":
        out = _child_recluster(args[0])
    elif step == "prepare":
        out = _child_prepare(args[0])
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


def _proc_mb(pid: int, field: str) -> float:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in MB; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _indexed(log_text: str) -> int:
    return sum(int(m) for m in re.findall(r"indexed (\d+) file\(s\)", log_text))


def bench_daemon(home: Path, work: Path, idle_seconds: float, drop_every: float
                 ) -> dict[str, float]:
    """The watch daemon on `home`: its idle RSS; then one photo starts a background recluster
    and further photos are dropped into the watched folder while it runs (the first at once,
    during the recluster's snapshot; then every `drop_every` seconds). Measures how long each
    took to be indexed (committed, searchable), how long the recluster child held the catalog,
    and the peak RSS of the daemon, of the child and of both together."""
    folder = Path(tempfile.mkdtemp(prefix="watched.", dir=work))
    env = {**os.environ, "FACEIDX_HOME": str(home), "FACEIDX_RECLUSTER_EVERY": "1",
           "FACEIDX_RECLUSTER_INTERVAL": "0", "FACEIDX_WATCH_SETTLE": "0.5"}
    log_path = work / "daemon.log"
    photos = iter(sorted((PHOTO / "lfw").rglob("*.jpg"))[::37])  # one per identity or so
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.app", "watch", "-v", str(folder)],
                                cwd=REPO, env=env, stderr=log, stdout=log)
    try:
        _wait_log(log_path, "watching ", proc)
        time.sleep(idle_seconds)
        idle = _proc_mb(proc.pid, "VmRSS")
        shutil.copy2(next(photos), folder)
        _wait_log(log_path, "reclustering in the background", proc)
        started = time.monotonic()
        base = _indexed(log_path.read_text())
        drops: list[float] = []  # when each photo was dropped (monotonic)
        done: list[float] = []   # when each was indexed
        peak_daemon = peak_child = peak_all = hwm_child = 0.0
        text = ""
        while "recluster done" not in text and "recluster failed" not in text:
            now = time.monotonic()
            if not drops or (now - drops[-1] >= drop_every and len(done) == len(drops)):
                shutil.copy2(next(photos), folder)
                drops.append(now)
            own = _proc_mb(proc.pid, "VmRSS")
            children = _child_pids(proc.pid)
            child = sum(_proc_mb(c, "VmRSS") for c in children)
            hwm_child = max([hwm_child] + [_proc_mb(c, "VmHWM") for c in children])
            peak_daemon, peak_child = max(peak_daemon, own), max(peak_child, child)
            peak_all = max(peak_all, own + child)
            if proc.poll() is not None:
                raise SystemExit(f"the daemon died; see {log_path}")
            time.sleep(0.2)
            text = log_path.read_text()
            while len(done) < min(len(drops), _indexed(text) - base):
                done.append(time.monotonic())
        recluster_s = time.monotonic() - started
        deadline = time.monotonic() + 600
        while len(done) < len(drops) and time.monotonic() < deadline:  # the last one dropped
            time.sleep(0.2)
            if len(done) < _indexed(log_path.read_text()) - base:
                done.append(time.monotonic())
        hwm_daemon = _proc_mb(proc.pid, "VmHWM")
        text = log_path.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    held = re.search(r"recluster done in [\d.]+ s \(it held the catalog ([\d.]+) s, "
                     r"([\d.]+) s at most at once\)", text)
    snap = re.search(r"the catalog held ([\d.]+) s of it", text)
    waits = [d - t for t, d in zip(drops, done, strict=False)]
    return {"daemon_idle_mb": idle, "daemon_peak_mb": peak_daemon,
            "daemon_hwm_mb": hwm_daemon, "recluster_child_peak_mb": peak_child,
            "recluster_child_hwm_mb": hwm_child, "daemon_plus_recluster_peak_mb": peak_all,
            "background_recluster_s": recluster_s, "photos_dropped": len(drops),
            "photo_in_snapshot_to_searchable_s": waits[0] if waits else -1.0,
            "photo_to_searchable_max_s": max(waits) if waits else -1.0,
            "photos_not_indexed": len(drops) - len(done),
            "child_held_catalog_s": float(held.group(1)) if held else -1.0,
            "child_longest_hold_s": float(held.group(2)) if held else -1.0,
            "snapshot_held_catalog_s": float(snap.group(1)) if snap else -1.0}


def prepare_daemon_home(home: Path) -> float:
    """Make the copy's search index files current, as the daemon's first batch would (a
    one-off of seconds to minutes at 1M, not what this step measures): a base of another kind
    than the settings ask for (the shared 1M home holds IVF-Flat) is rebuilt, and the exact
    vectors beside a PQ base, named after the original file's inode, are written again under
    the copy's name. Returns the seconds it took."""
    t0 = time.perf_counter()
    run_step("prepare", str(home))
    return time.perf_counter() - t0


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
    ap.add_argument("--drop-every", type=float, default=15.0,
                    help="seconds between photos dropped during the daemon's recluster")
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
        dim = int(r["dim"])
        print(f"faceidx recluster, {r['faces']} faces, {dim}-d ({r['model']} home {src}): "
              f"{r['wall']:.1f} s wall ({r['seconds']:.1f} s in recluster()), "
              f"peak RSS {r['peak_mb']:.0f} MB, {r['clusters']} people", flush=True)
        figures[f"recluster_{label}_{dim}_s"] = round(r["wall"], 1)
        figures[f"recluster_{label}_{dim}_peak_mb"] = round(r["peak_mb"])
        if "recall" not in skip:
            k = run_step("recall", str(home), "0", "0")
            print(f"  kNN graph {'exact' if k['exact'] else 'IVF'}: {k['knn_seconds']:.1f} s, "
                  f"neighbour recall {k['recall']:.4f} (2000 sampled faces), "
                  f"{k['recall_near']:.4f} of neighbours within {k['near']}", flush=True)
            figures[f"knn_{label}_{dim}_s"] = round(k["knn_seconds"], 1)
            figures[f"knn_recall_{label}_{dim}"] = round(k["recall"], 4)
            figures[f"knn_recall_near_{label}_{dim}"] = round(k["recall_near"], 4)
        shutil.rmtree(home, ignore_errors=True)
    if "daemon" not in skip:
        home = copy_home(Path(args.home_1m), work, "home_daemon")
        prep = prepare_daemon_home(home)
        print(f"(the copy's search index files made current in {prep:.0f} s)", flush=True)
        d = bench_daemon(home, work, args.idle_seconds, args.drop_every)
        print(f"watch daemon on {args.home_1m}: idle RSS {d['daemon_idle_mb']:.0f} MB. "
              f"During a background recluster ({d['background_recluster_s']:.0f} s): a photo "
              f"dropped as it started (its snapshot) was searchable after "
              f"{d['photo_in_snapshot_to_searchable_s']:.1f} s, the slowest of "
              f"{d['photos_dropped']:.0f} photos dropped every {args.drop_every:.0f} s after "
              f"{d['photo_to_searchable_max_s']:.1f} s ({d['photos_not_indexed']:.0f} not "
              f"indexed); the recluster child held the catalog "
              f"{d['child_held_catalog_s']:.1f} s all told ({d['snapshot_held_catalog_s']:.1f}"
              f" s for its snapshot, {d['child_longest_hold_s']:.1f} s at most at once); peak "
              f"RSS: daemon {d['daemon_peak_mb']:.0f} MB (high-water {d['daemon_hwm_mb']:.0f}),"
              f" recluster child {d['recluster_child_peak_mb']:.0f} MB (high-water "
              f"{d['recluster_child_hwm_mb']:.0f}), both together "
              f"{d['daemon_plus_recluster_peak_mb']:.0f} MB (sampled every 0.2 s)", flush=True)
        figures.update({k: round(v, 1) for k, v in d.items()})
        shutil.rmtree(home, ignore_errors=True)
    if "512" not in skip:
        n = args.dim512_faces
        r = run_step("cluster", str(n), "512")
        print(f"clustering {n} synthetic 512-d faces (identity structure; no 512-d home): "
              f"{r['wall']:.1f} s wall ({r['seconds']:.1f} s clustering), peak RSS "
              f"{r['peak_mb']:.0f} MB ({r['vectors_peak_mb']:.0f} MB before the clustering, "
              f"making the vectors), {r['clusters']} clusters", flush=True)
        figures["cluster_1m_512_s"] = round(r["wall"], 1)
        figures["cluster_1m_512_peak_mb"] = round(r["peak_mb"])
        figures["cluster_1m_512_vectors_peak_mb"] = round(r["vectors_peak_mb"])
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
