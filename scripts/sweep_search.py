"""Sweep the shape of the IVF fast-scan PQ search base and its search knobs on a home's faces.

    nice -n 10 uv run python scripts/sweep_search.py HOME [--like STATS] \
        [--shapes 4096:128:0,4096:64:1] [--nprobe 512,1024] [--refine 100,300] \
        [--implem 11,15,0] [--threads 1,2] [--rounds 3]

HOME is only read (its faces, through a read-only store). Queries are made as
scripts/bench_scale.py makes them: 200 stored faces plus 0.02 noise, renormalised, searched one
at a time through the store's `FaceIndex` (re-rank on the exact vectors). With --like, the same
on as many faces fitted to real ones (`indexer.synthetic_fit`, 200 held out as queries).
A shape is LISTS:M:RESIDUAL: IVF lists, 4-bit PQ sub-quantizers a face (M/2 bytes) and whether
codes encode the residual from the list's centroid (FAISS `PQ{M}x4fs` or `PQ{M}x4fsr`); the
store builds 0 lists (its rule for the size), pq_subquantizers(dim), no residual. --implem is
the FAISS fast-scan implementation a search of one query face uses (faceindex.SERIAL_FAST_SCAN on
one thread, PARALLEL_FAST_SCAN on more; 0: FAISS's choice), --threads the OpenMP threads it may
use. Settings are measured in turn, --rounds times, each figure the best round (CPU is the
figure to read on a loaded machine). Prints one row per setting: CPU and wall ms
per query face, recall@10 against exact search, the build's time and the bytes of codes a face.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import exact_top10, fitted_faces, noisy_queries, recall10, timed_search

from indexer import settings as settings_mod
from indexer.store import Store, faceindex
from indexer.store.faceindex import FaceIndex, fill_ivf, ivf_lists, pq_subquantizers


def build(vectors: np.ndarray, nlist: int, m: int, residual: bool) -> tuple[object, float]:
    """A base as faceindex.build_base builds a `pq` one, of this shape; and its build seconds."""
    start = time.perf_counter()
    dim = vectors.shape[1]
    shape = f"PQ{m}x4fs{'r' if residual else ''}"
    index = faiss.index_factory(dim, f"IVF{nlist},{shape}", faiss.METRIC_INNER_PRODUCT)
    fill_ivf(index, np.arange(len(vectors), dtype=np.int64), vectors, nlist, shape)
    return index, time.perf_counter() - start


def data_sets(home: Path, like: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (base vectors, queries), as bench_scale makes them."""
    with Store.open(settings_mod.load({"home": home}), read_only=True) as store:
        _, vectors = store.embeddings()
    sets = {"home": (vectors, noisy_queries(vectors))}
    if like is not None:
        sets["fitted"] = fitted_faces(like, len(vectors))
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("home", type=Path)
    ap.add_argument("--like", type=Path, default=None, help="statistics of real faces")
    ap.add_argument("--shapes", default="0:0:0", help="LISTS:M:RESIDUAL, comma separated")
    ap.add_argument("--nprobe", default="512,1024")
    ap.add_argument("--refine", default="100")
    ap.add_argument("--implem", default="11,15,0")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    all_threads = faiss.omp_get_max_threads()
    for name, (vectors, queries) in data_sets(args.home, args.like).items():
        truth = exact_top10(queries, vectors)
        ids = np.arange(len(vectors), dtype=np.int64)
        for shape in args.shapes.split(","):
            nlist, m, residual = (int(x) for x in shape.split(":"))
            nlist = nlist or ivf_lists(len(vectors))
            m = m or pq_subquantizers(vectors.shape[1])
            faiss.omp_set_num_threads(all_threads)
            index, build_s = build(vectors, nlist, m, bool(residual))
            best: dict[tuple[int, int, int, int], list[float]] = {}
            settings = [(nprobe, refine, implem, threads) for nprobe in ints(args.nprobe)
                        for refine in ints(args.refine) for implem in ints(args.implem)
                        for threads in ints(args.threads)]
            for _ in range(args.rounds):
                for nprobe, refine, implem, threads in settings:
                    faceindex.SERIAL_FAST_SCAN = faceindex.PARALLEL_FAST_SCAN = implem
                    faiss.omp_set_num_threads(threads)
                    view = FaceIndex(index, ids, vectors.shape[1], nprobe,
                                     ids_sorted=True, vectors=vectors, refine=refine)
                    view.search(queries[:2], 10)
                    got, wall, cpu = timed_search(
                        lambda q, v=view: v.search(q, 10)[1][0], queries)
                    recall = recall10(got, truth)
                    key = (nprobe, refine, implem, threads)
                    old = best.get(key, [np.inf, np.inf, recall])
                    best[key] = [min(old[0], cpu), min(old[1], wall), recall]
            for (nprobe, refine, implem, threads), (cpu, wall, recall) in best.items():
                print(f"{name} {len(vectors):,} faces, {nlist} lists, PQ{m}x4 "
                      f"{'residual' if residual else 'direct'}, nprobe {nprobe}, refine "
                      f"{refine}, implem {implem}, {threads} thread(s): {cpu:.2f} ms CPU, "
                      f"{wall:.2f} ms wall, "
                      f"recall@10 {recall:.3f}, built in {build_s:.0f} s, {m // 2} B/face "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
            del index
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
