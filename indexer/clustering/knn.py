"""k-nearest-neighbour graphs with FAISS: exact flat search for moderate sizes, IVF beyond."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import faiss
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Embeddings = NDArray[np.float32]


@dataclass(frozen=True)
class KnnGraph:
    """Each point's `k` nearest other points, nearest first.

    `indices` is (N, k) with -1 where fewer than k other points exist; `distances` the (N, k)
    Euclidean distances (inf where padded). After the exact search they are int64 and float64
    recomputed in double precision; after the IVF search int32 and the search's own float32
    (at 1M faces the graph is 192 MB instead of 384, and the spanning tree's weights follow).
    `exact` tells whether the search was exhaustive.
    """

    indices: NDArray[np.int64]
    distances: NDArray[np.float64]
    exact: bool

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


@dataclass(frozen=True)
class KnnConfig:
    """How to search. Flat (exact) search up to `exact_max_faces`, IVF above it.

    The flat search costs N^2 (66% of a recluster at 100k faces when it ran up to 200k); above
    20k faces the spanning tree is approximate anyway (HdbscanConfig.exact_max_faces), so the
    kNN search turns approximate there too. Its neighbour recall against exact search is
    measured by `neighbour_recall` (scripts/bench_recluster.py prints it)."""

    exact_max_faces: int = 20_000
    ivf_lists_per_sqrt_n: float = 8.0  # finer lists, finer probes: see the README
    ivf_nprobe: int = 64  # nearest lists known per list; ivf_candidates picks among them
    # candidate points searched per point (probe_lists): this times sqrt(N), the share of the
    # points searched falls as 1/sqrt(N) (at 100k faces 2.5%, at 1M 0.8%)
    ivf_candidates_per_sqrt_n: float = 8.0
    ivf_min_candidates: int = 2000
    ivf_train_per_list: int = 8  # k-means training vectors per list
    ivf_train_iterations: int = 6
    batch_size: int = 8192


def as_float32(x: NDArray[np.floating]) -> Embeddings:
    return np.ascontiguousarray(x, dtype=np.float32)


def coarse_lists(
    x: Embeddings, config: KnnConfig, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """k-means lists over `x`: (points sorted by list, each list's start in that order, and
    each list's `ivf_nprobe` nearest lists, itself first)."""
    n, dim = x.shape
    nlist = max(1, min(n, int(config.ivf_lists_per_sqrt_n * np.sqrt(n))))
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, size=min(n, config.ivf_train_per_list * nlist),
                                 replace=False))]
    logger.info("k-means: %d lists on %d vectors", nlist, len(train))
    km = faiss.Kmeans(dim, nlist, niter=config.ivf_train_iterations, seed=seed,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(train)
    del train
    assign = np.empty(n, dtype=np.int64)
    for start in range(0, n, config.batch_size):
        _, a = km.index.search(x[start : start + config.batch_size], 1)
        assign[start : start + config.batch_size] = a[:, 0]
    _, near = km.index.search(km.centroids, min(config.ivf_nprobe, nlist))
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(nlist + 1))
    return order, bounds, near.astype(np.int64)


_QUERY_BLOCK = 256  # queries per matrix product in batched_ivf_search (a list holds 125 points
# on average at 1M faces; at 512 the biggest lists' products were 70 MB a worker at 512-d)
_DIFF_BLOCK = 128  # queries per exact recomputation of their candidates' distances


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def probe_lists(near: NDArray[np.int64], sizes: NDArray[np.int64], budget: int
                ) -> list[NDArray[np.int64]]:
    """For each list, its nearest lists (itself first) up to about `budget` candidate points:
    lists are taken while the points before them number fewer than `budget`. k-means lists of
    face embeddings are uneven (at 100k faces from 1 to 723 points, median 46), and a fixed
    number of lists per list cost 5.8x the mean where big lists sit among big lists."""
    out = []
    for row in near:
        row = row[row >= 0]
        before = np.cumsum(sizes[row]) - sizes[row]
        out.append(row[before < budget])
    return out


def _top_k_rows(d2: NDArray[np.float32], kk: int, head: int) -> NDArray[np.int64]:
    """Columns of the `kk` smallest entries of each row of `d2` (unsorted), cheaper than an
    argpartition of the whole block: the kk-th smallest of the first `head` columns bounds
    each row's kk-th smallest, and only entries under that bound (a few per row) are sorted."""
    rows = d2.shape[0]
    bound = np.partition(d2[:, :head], kk - 1, axis=1)[:, kk - 1]
    r, c = np.nonzero(d2 <= bound[:, None])
    order = np.lexsort((d2[r, c], r))
    r, c = r[order], c[order]
    starts = np.searchsorted(r, np.arange(rows))
    return c[starts[:, None] + np.arange(kk)[None, :]].astype(np.int64)


def batched_ivf_search(x: Embeddings, want: int, config: KnnConfig, seed: int = 0
                       ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Approximate `want` nearest points (self included) of every point and their float32
    distances, a list at a time: the points of one k-means list against every point of its
    nearest lists (up to ivf_candidates_per_sqrt_n * sqrt(N) points, see `probe_lists`), as
    one matrix product (BLAS), so the cost is about that many multiply-adds per point at
    matrix speed instead of one scan per query.

    Lists run on one worker thread per core, each with a single-threaded BLAS: one threaded
    BLAS per small product spun more than it computed (at 100k faces, 31 s of CPU against
    13 s), and the Python around each product ran on one core."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    t0 = time.perf_counter()
    order, bounds, near = coarse_lists(x, config, seed)
    t1 = time.perf_counter()
    sizes = np.diff(bounds)
    budget = max(want, config.ivf_min_candidates,
                 int(config.ivf_candidates_per_sqrt_n * np.sqrt(n)))
    probes = probe_lists(near, sizes, budget)
    sq = np.einsum("ij,ij->i", x, x)
    out = np.full((n, want), -1, dtype=_index_dtype(n))
    dist = np.full((n, want), np.inf, dtype=np.float32)

    def search(lst: int) -> None:
        cand = np.concatenate([order[bounds[m] : bounds[m + 1]] for m in probes[lst]])
        xc = x[cand]
        sqc = sq[cand]
        kk = min(want, len(cand))
        # the bound comes from the nearest lists' columns (own list first): a tight one
        head = min(len(cand), max(4 * kk, len(cand) // 4))
        members = order[bounds[lst] : bounds[lst + 1]]
        for start in range(0, len(members), _QUERY_BLOCK):
            q = members[start : start + _QUERY_BLOCK]
            xq = x[q]
            d2 = xq @ xc.T
            d2 *= -2.0
            d2 += sqc[None, :]  # + |q|^2 is the same along a row: not needed to rank
            part = _top_k_rows(d2, kk, head) if kk < len(cand) else \
                np.broadcast_to(np.arange(len(cand)), (len(q), len(cand)))
            out[q, :kk] = cand[part]
            # in smaller blocks: (queries, kk, dim) floats twice, 26 MB a worker at 512-d
            for s in range(0, len(q), _DIFF_BLOCK):
                diff = xq[s : s + _DIFF_BLOCK, None, :] - xc[part[s : s + _DIFF_BLOCK]]
                dist[q[s : s + _DIFF_BLOCK], :kk] = np.sqrt(
                    np.einsum("ijk,ijk->ij", diff, diff))

    lists = np.argsort(-sizes, kind="stable")  # the biggest first: even work at the end
    lists = lists[sizes[lists] > 0].tolist()
    with threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(_workers()) as pool:
        for _ in pool.map(search, lists):
            pass
    _give_back_freed_memory()
    logger.info("IVF kNN: %d points, %d lists, %.0f candidates a point; lists %.1fs, search %.1fs",
                n, len(sizes), sum(len(p) and sizes[p].sum() * sizes[i]
                                   for i, p in enumerate(probes)) / max(n, 1),
                t1 - t0, time.perf_counter() - t1)
    return out, dist


def _index_dtype(n: int) -> type[np.signedinteger]:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _give_back_freed_memory() -> None:
    """Return the worker threads' freed blocks to the system (glibc's malloc_trim; elsewhere
    nothing): their arenas otherwise stay resident under what comes next (at 100k x 512
    the search's peak RSS carried about 150 MB of them into the spanning tree)."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def pair_distances(
    x: Embeddings,
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    chunk: int = 1 << 20,
) -> NDArray[np.float64]:
    """Euclidean distances between x[rows[i]] and x[cols[i]], computed in float64 (like
    sklearn's trees)."""
    out = np.empty(len(rows), dtype=np.float64)
    step = max(1, chunk // max(1, x.shape[1]))
    for start in range(0, len(rows), step):
        a = x[rows[start : start + step]].astype(np.float64)
        b = x[cols[start : start + step]].astype(np.float64)
        diff = a - b
        out[start : start + step] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def build_knn(x: Embeddings, k: int, config: KnnConfig | None = None, seed: int = 0) -> KnnGraph:
    """k nearest other points of every point (self excluded), sorted by float64 distance."""
    config = config or KnnConfig()
    x = as_float32(x)
    n = x.shape[0]
    k = max(1, min(k, n - 1)) if n > 1 else 1
    want = min(n, k + 1)
    exact = n <= config.exact_max_faces
    if not exact:
        return _finish_in_place(x, *batched_ivf_search(x, want, config, seed))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    raw = np.empty((n, want), dtype=np.int64)
    for start in range(0, n, config.batch_size):
        _, idx = index.search(x[start : start + config.batch_size], want)
        raw[start : start + config.batch_size] = idx
    del index
    indices = np.empty((n, want - 1), dtype=np.int64)
    distances = np.empty((n, want - 1), dtype=np.float64)
    # A block of rows at a time: whole-array temporaries cost about 1.3 GB at 1M faces.
    for start in range(0, n, _FINISH_ROWS):
        end = min(n, start + _FINISH_ROWS)
        indices[start:end], distances[start:end] = _finish_rows(x, raw[start:end], None, start)
    return KnnGraph(indices=indices, distances=distances, exact=True)


def _finish_in_place(x: Embeddings, raw: NDArray[np.signedinteger],
                     raw_dist: NDArray[np.float32]) -> KnnGraph:
    """The IVF search's (N, k + 1) result as the graph, written over the search's own arrays
    (row r's k columns at r * k of the flat buffer; a block's rows are read before they are
    overwritten, and never after): a second pair of (N, k) arrays beside them was 384 MB
    of the peak at 1M faces."""
    n, want = raw.shape
    k = want - 1
    flat_i, flat_d = raw.reshape(-1), raw_dist.reshape(-1)
    for start in range(0, n, _FINISH_ROWS):
        end = min(n, start + _FINISH_ROWS)
        idx, dist = _finish_rows(x, raw[start:end], raw_dist[start:end], start)
        flat_i[start * k : end * k] = idx.ravel()
        flat_d[start * k : end * k] = dist.ravel()
    return KnnGraph(indices=flat_i[: n * k].reshape(n, k),
                    distances=flat_d[: n * k].reshape(n, k), exact=False)


_FINISH_ROWS = 1 << 16


def _finish_rows(x: Embeddings, raw: NDArray[np.signedinteger],
                 raw_dist: NDArray[np.float32] | None, first_row: int
                 ) -> tuple[NDArray[np.signedinteger], NDArray[np.floating]]:
    """Rows `first_row`.. of the search's result without self, sorted by distance (float64
    recomputed after the exact search, the search's float32 after the IVF one)."""
    want = raw.shape[1]
    # Drop self (normally column 0, but exact duplicates may shuffle it) and keep k columns.
    rows = np.arange(first_row, first_row + raw.shape[0])[:, None]
    is_self = raw == rows
    has_self = is_self.any(axis=1)
    keep = ~is_self & (raw >= 0)
    # Rows without self in the result lose their last (farthest) column instead.
    drop_last = ~has_self
    if raw_dist is not None:  # the IVF's columns are not sorted: drop the farthest
        far = np.argmax(np.where(keep, raw_dist, -np.inf), axis=1)
        keep[np.nonzero(drop_last)[0], far[drop_last]] = False
    else:
        keep[drop_last, want - 1] = False
    order = np.argsort(~keep, axis=1, kind="stable")
    nbrs = np.take_along_axis(raw, order, axis=1)[:, : want - 1]
    valid = np.take_along_axis(keep, order, axis=1)[:, : want - 1]
    nbrs = np.where(valid, nbrs, -1)
    if raw_dist is None:  # exact: distances in float64, like sklearn's trees
        dist = np.full(nbrs.shape, np.inf)
        r, c = np.nonzero(valid)
        dist[r, c] = pair_distances(x, (r + first_row).astype(np.int64), nbrs[r, c])
    else:  # approximate: the search's own float32 distances
        dist = np.where(valid, np.take_along_axis(raw_dist, order, axis=1)[:, : want - 1],
                        np.float32(np.inf))
    # Re-sort by the final distances so that ties and float32 noise do not matter.
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(nbrs, order, axis=1), np.take_along_axis(dist, order, axis=1)


def neighbour_recall(
    x: NDArray[np.floating],
    graph: KnnGraph,
    sample: int = 2000,
    seed: int = 0,
    within: float | None = None,
) -> float:
    """Share of the true k nearest other points that `graph` found, over `sample` random
    points (exact search for those points only, in blocks: no copy of `x`). With `within`,
    only true neighbours closer than that distance count (those that clustering joins)."""
    x = as_float32(x)
    n = x.shape[0]
    if n < 2 or graph.k == 0:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    sq = np.einsum("ij,ij->i", x, x)
    found = total = 0
    for start in range(0, len(rows), 256):
        q = rows[start : start + 256]
        d2 = sq[q, None] + sq[None, :] - 2.0 * (x[q] @ x.T)
        d2[np.arange(len(q)), q] = np.inf  # not itself
        k = min(graph.k, n - 1)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        for i, r in enumerate(q.tolist()):
            truth = part[i]
            if within is not None:
                truth = truth[d2[i, truth] <= within * within]
            got = set(graph.indices[r].tolist())
            found += sum(1 for j in truth.tolist() if j in got)
            total += len(truth)
    return found / total if total else 1.0
