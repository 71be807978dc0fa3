"""Minimum spanning tree of the HDBSCAN mutual-reachability graph, seeded by a kNN graph.

Boruvka's algorithm: every round each component takes its lightest edge to another component.
Candidate edges come from the kNN lists. A point whose lightest outgoing kNN edge is not
provably lighter than every edge outside its list (any unlisted point j has
d(i, j) >= d_k(i), so mutual reachability >= max(core_i, d_k(i))) is searched densely, but only
when that bound is below the best edge its component already has. With dense completion on,
the tree is an exact minimum spanning tree of the full mutual-reachability graph (ties
aside), so labels match the hdbscan library's. Without it (huge inputs), components that
have no kNN edge out of them are joined through their centroid's nearest outside point.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from indexer.clustering.knn import Embeddings, KnnGraph, pair_distances

logger = logging.getLogger(__name__)

MstEdges = NDArray[np.float64]  # (N-1, 3): from, to, weight; the hdbscan library's format

_TIE_TOLERANCE = 1e-5  # float32 distances within this of the minimum are re-checked in float64
_BLOCK_ELEMENTS = 1 << 24  # elements of one (queries x points) block in dense search


def core_distances(knn: KnnGraph, min_samples: int) -> NDArray[np.float64]:
    """Distance to the `min_samples`-th nearest other point.

    The hdbscan library queries k = min_samples + 1 neighbours *including the point itself*
    and takes the last, i.e. the min_samples-th other point; this is the same quantity.
    """
    col = max(1, min(min_samples, knn.k)) - 1
    return knn.distances[:, col].copy()


def _dense_out_of_component(
    x: Embeddings,
    sq: NDArray[np.float32],
    core: NDArray[np.float64],
    comp: NDArray[np.int64],
    queries: NDArray[np.int64],
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """For each query point, its lightest mutual-reachability edge to another component."""
    n = x.shape[0]
    core32 = core.astype(np.float32)
    vals = np.full(len(queries), np.inf)
    tgts = np.full(len(queries), -1, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        d2 = sq[q, None] + sq[None, :] - 2.0 * (x[q] @ x.T)
        np.maximum(d2, 0.0, out=d2)
        mr = np.sqrt(d2, out=d2)
        np.maximum(mr, core32[None, :], out=mr)
        np.maximum(mr, core32[q, None], out=mr)
        mr[comp[None, :] == comp[q, None]] = np.inf
        best = mr.min(axis=1)
        r, c = np.nonzero(mr <= (best + _TIE_TOLERANCE)[:, None])
        if len(r) == 0:
            continue
        src = q[r]
        exact = np.maximum(pair_distances(x, src, c.astype(np.int64)), core[src])
        exact = np.maximum(exact, core[c])
        order = np.lexsort((c, exact, r))
        r, c, exact = r[order], c[order], exact[order]
        first = np.ones(len(r), dtype=bool)
        first[1:] = r[1:] != r[:-1]
        vals[start + r[first]] = exact[first]
        tgts[start + r[first]] = c[first]
    return vals, tgts


def _centroid_links(
    x: Embeddings, core: NDArray[np.float64], comp: NDArray[np.int64], isolated: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Approximate links for components with no kNN edge out: centroid -> nearest outside point
    -> nearest member to that point. Returns (source point, weight, target point) per component."""
    n = x.shape[0]
    order = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[order], np.arange(comp.max() + 2))
    members = [order[bounds[c] : bounds[c + 1]] for c in isolated]
    sq = np.einsum("ij,ij->i", x, x)
    srcs = np.empty(len(isolated), dtype=np.int64)
    tgts = np.empty(len(isolated), dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // n)
    # centroids a block at a time: all at once held (components x dim) twice, about 1 GB
    # at 1M x 512 in the first Boruvka rounds
    cents = np.empty((block, x.shape[1]), dtype=np.float32)
    for start in range(0, len(isolated), block):
        c_ids = isolated[start : start + block]
        for i, m in enumerate(members[start : start + block]):
            cents[i] = _member_mean(x, m)
        d2 = cents[: len(c_ids)] @ x.T  # in place after: one (block x N) buffer, not three
        d2 *= -2.0
        d2 += sq[None, :]
        d2[comp[None, :] == c_ids[:, None]] = np.inf
        tgts[start : start + block] = d2.argmin(axis=1)
    for pos, m in enumerate(members):
        j = tgts[pos]
        srcs[pos] = m[np.argmin(np.concatenate([
            sq[m[s : s + _GATHER_ROWS]] - 2.0 * (x[m[s : s + _GATHER_ROWS]] @ x[j])
            for s in range(0, len(m), _GATHER_ROWS)]))]
    w = np.maximum(pair_distances(x, srcs, tgts), np.maximum(core[srcs], core[tgts]))
    return srcs, w, tgts


_ROWS = 1 << 16  # rows of the kNN graph per block in the Boruvka rounds
# Members of a component gathered at once (64 MB at 512-d): the late rounds' components hold
# hundreds of thousands of points, and x[members] whole was the peak of the clustering (at
# 200k x 512, 550 MB beyond the vectors).
_GATHER_ROWS = 1 << 15


def _member_mean(x: Embeddings, m: NDArray[np.int64]) -> NDArray[np.floating]:
    """Mean of x[m], summed in float64 a block of members at a time when there are many."""
    if len(m) <= _GATHER_ROWS:
        return x[m].mean(axis=0)
    total = np.zeros(x.shape[1])
    for s in range(0, len(m), _GATHER_ROWS):
        total += x[m[s : s + _GATHER_ROWS]].sum(axis=0, dtype=np.float64)
    return total / len(m)


def _reach_block(knn: KnnGraph, core: NDArray[np.float64], start: int, end: int
                 ) -> tuple[NDArray[np.bool_], NDArray[np.int64], NDArray[np.floating]]:
    """Rows start..end of the kNN graph: which entries exist, the neighbours, and the
    mutual-reachability weights of those edges (inf where none): computed again for each
    Boruvka round rather than kept, 125 MB at 1M faces."""
    nbr = knn.indices[start:end]
    v = nbr >= 0
    w = np.maximum(knn.distances[start:end],
                   np.maximum(core[start:end, None], core[np.where(v, nbr, 0)]))
    w[~v] = np.inf
    return v, nbr, w


def _lightest_out(knn: KnnGraph, core: NDArray[np.float64], comp: NDArray[np.int64]
                  ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Each point's lightest kNN edge to another component (inf, and its first neighbour,
    where there is none), a block of rows at a time."""
    n = knn.indices.shape[0]
    val = np.empty(n, dtype=np.float64)
    tgt = np.empty(n, dtype=np.int64)
    for start in range(0, n, _ROWS):
        end = min(n, start + _ROWS)
        v, b, weights = _reach_block(knn, core, start, end)
        out = v & (comp[np.where(v, b, 0)] != comp[start:end, None])
        cand = np.where(out, weights, np.inf)
        col = cand.argmin(axis=1)
        r = np.arange(end - start)
        val[start:end] = cand[r, col]
        tgt[start:end] = b[r, col]
    return val, tgt


def mutual_reachability_mst(
    x: Embeddings, knn: KnnGraph, core: NDArray[np.float64], *, dense_completion: bool = True
) -> MstEdges:
    """Minimum spanning tree of the mutual-reachability graph (alpha = 1), as (N-1, 3) edges."""
    n = x.shape[0]
    if n < 2:
        return np.zeros((0, 3), dtype=np.float64)
    last = np.empty(n, dtype=np.float64)
    complete = np.empty(n, dtype=bool)
    for start in range(0, n, _ROWS):  # blocks of rows: no whole-graph temporaries
        end = min(n, start + _ROWS)
        v = knn.indices[start:end] >= 0
        last[start:end] = np.where(v, knn.distances[start:end], -np.inf).max(axis=1)
        complete[start:end] = v.sum(axis=1) >= n - 1
    # Any edge to a point outside i's list weighs at least this (a complete list: infinity).
    static_lb = np.where(complete, np.inf, np.maximum(core, last))
    sq = np.einsum("ij,ij->i", x, x)
    rows = np.arange(n)
    comp = np.arange(n, dtype=np.int64)
    n_comp = n
    dense_val = np.full(n, np.inf)
    dense_tgt = np.full(n, -1, dtype=np.int64)
    tree: list[NDArray[np.float64]] = []
    n_dense = 0
    rounds = 0
    while n_comp > 1:
        rounds += 1
        val, tgt = _lightest_out(knn, core, comp)
        exact = val <= static_lb
        searched = dense_tgt >= 0
        still_out = searched & (comp[np.maximum(dense_tgt, 0)] != comp)
        take = still_out & (dense_val <= val)
        val = np.where(take, dense_val, val)
        tgt = np.where(take, dense_tgt, tgt)
        exact |= still_out
        lower = np.where(searched & ~still_out, np.maximum(static_lb, dense_val), static_lb)
        upper = np.full(n_comp, np.inf)
        np.minimum.at(upper, comp, val)
        need = ~exact & (lower < upper[comp])
        logger.debug(
            "round %d: %d components, %d points need a dense search", rounds, n_comp, need.sum()
        )
        if need.any():
            if dense_completion:
                q = np.nonzero(need)[0]
                n_dense += len(q)
                dv, dt = _dense_out_of_component(x, sq, core, comp, q)
                dense_val[q], dense_tgt[q] = dv, dt
                better = dv <= val[q]
                val[q[better]], tgt[q[better]] = dv[better], dt[better]
            else:
                isolated = np.nonzero(np.isinf(upper))[0]
                if len(isolated):
                    s, w, t = _centroid_links(x, core, comp, isolated)
                    better = w < val[s]
                    val[s[better]], tgt[s[better]] = w[better], t[better]
        # Each component's lightest edge (ties broken by point index).
        finite = np.isfinite(val)
        cand_pts = rows[finite]
        order = np.lexsort((cand_pts, val[cand_pts], comp[cand_pts]))
        cand_pts = cand_pts[order]
        first = np.ones(len(cand_pts), dtype=bool)
        first[1:] = comp[cand_pts[1:]] != comp[cand_pts[:-1]]
        src = cand_pts[first]
        dst = tgt[src]
        w = val[src]
        # Several components may pick edges that close a cycle (equal weights): a spanning
        # tree of the contracted graph keeps a consistent subset.
        ca, cb = comp[src], comp[dst]
        lo, hi = np.minimum(ca, cb), np.maximum(ca, cb)
        key = lo * n_comp + hi
        order = np.lexsort((w, key))
        key, src, dst, w, lo, hi = (
            key[order],
            src[order],
            dst[order],
            w[order],
            lo[order],
            hi[order],
        )
        uniq = np.ones(len(key), dtype=bool)
        uniq[1:] = key[1:] != key[:-1]
        key, src, dst, w, lo, hi = key[uniq], src[uniq], dst[uniq], w[uniq], lo[uniq], hi[uniq]
        # Offset by 1 so that zero-weight edges (duplicate photos) are not taken as missing.
        graph = coo_matrix((w + 1.0, (lo, hi)), shape=(n_comp, n_comp)).tocsr()
        kept = minimum_spanning_tree(graph).tocoo()
        kept_key = np.minimum(kept.row, kept.col).astype(np.int64) * n_comp + np.maximum(
            kept.row, kept.col
        )
        pick = np.searchsorted(key, kept_key)
        tree.append(np.column_stack([src[pick], dst[pick], w[pick]]).astype(np.float64))
        all_edges = np.concatenate(tree)
        a = all_edges[:, 0].astype(np.int64)
        b = all_edges[:, 1].astype(np.int64)
        adj = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
        n_comp, labels = connected_components(adj, directed=False)
        comp = labels.astype(np.int64)
    logger.debug("MST: %d Boruvka rounds, %d dense out-of-component searches", rounds, n_dense)
    return np.concatenate(tree) if tree else np.zeros((0, 3), dtype=np.float64)
