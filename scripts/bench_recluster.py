"""Time the default recluster on synthetic (or real) face embeddings.

    uv run python scripts/bench_recluster.py --faces 100000 [--dim 512]
    uv run python scripts/bench_recluster.py --real /tmp/faceidx_lfw_dlib.npz

Reports the default recluster's time and the process's peak memory and, where it can finish
(up to --exact-max faces), the hdbscan library's exact run for comparison. The last line is
exactly `faces=N seconds=S peak_mb=M`.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time

import numpy as np

from indexer.clustering import ClusterParams, cluster, score
from indexer.clustering.synthetic import make_identities


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--faces", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--max-identity",
        type=int,
        default=None,
        help="largest identity (default: N/100, at least 50)",
    )
    ap.add_argument("--real", help="npz with `embeddings` (and optional `labels`) instead")
    ap.add_argument(
        "--exact-max",
        type=int,
        default=20_000,
        help="also run exact hdbscan up to this many faces (0: never)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )

    if args.real:
        data = np.load(args.real, allow_pickle=False)
        x = np.ascontiguousarray(data["embeddings"], dtype=np.float32)
        truth = data["labels"] if "labels" in data.files else None
        source = args.real
    else:
        max_id = args.max_identity or max(50, args.faces // 100)
        t0 = time.perf_counter()
        faces = make_identities(args.faces, args.dim, seed=args.seed, max_size=max_id)
        x, truth = faces.embeddings, faces.identities
        source = (
            f"synthetic seed={args.seed} dim={args.dim} max_identity={max_id} "
            f"identities={len(np.unique(truth))} ({time.perf_counter() - t0:.1f}s to make)"
        )
    n = x.shape[0]
    print(f"data: {n} faces x {x.shape[1]} dims, {source}")
    print(f"memory before clustering: {peak_mb():.0f} MB")

    params = ClusterParams()
    t0 = time.perf_counter()
    result = cluster(x, "hdbscan", params)
    seconds = time.perf_counter() - t0
    peak = peak_mb()
    line = (
        f"default recluster: {seconds:.1f}s, {result.n_clusters} clusters, "
        f"{result.n_outliers} outliers, exact tree: {result.details.get('exact')}"
    )
    if truth is not None:
        s = score(truth, result.labels)
        line += f", BCubed F1 {s.bcubed_f1:.4f}, pairwise F1 {s.pairwise_f1:.4f}"
    print(line)

    if 0 < n <= args.exact_max:
        import hdbscan
        from sklearn.metrics import adjusted_rand_score

        t0 = time.perf_counter()
        ref = hdbscan.HDBSCAN(
            min_cluster_size=params.min_cluster_size, min_samples=params.min_samples
        ).fit(x)
        exact_s = time.perf_counter() - t0
        plain = result.details["hdbscan_labels"]
        print(
            f"exact hdbscan library: {exact_s:.1f}s (speed-up {exact_s / seconds:.1f}x); "
            f"ARI(fast HDBSCAN before refinement, exact) = "
            f"{adjusted_rand_score(ref.labels_, plain):.6f}"
        )
    print(f"faces={n} seconds={seconds:.1f} peak_mb={peak:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
