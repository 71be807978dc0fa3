"""Post-steps that correct HDBSCAN with face-distance thresholds of physical meaning.

HDBSCAN's clusters follow density, so a chain of look-alikes can hold two people, and a face
in a sparse neighbourhood is left as noise even when it is close to a known person. Each step
uses one distance on the embedding's scale (see ClusterParams). Order: split faces far from
their cluster's medoid (undoes chaining and pairs of look-alike strangers), merge clusters
with very close centroids (one person split by HDBSCAN's density), then let outliers join
the cluster of a very close clustered neighbour (HDBSCAN leaves many true members as noise).
With photo groups (cannot-link), a merge that would join two faces of one photo is not made,
and an outlier never joins a cluster that already holds a face of its photo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer.clustering import constraints
from indexer.clustering.constraints import Groups
from indexer.clustering.knn import Embeddings, KnnGraph
from indexer.clustering.labels import Labels, compact, components

logger = logging.getLogger(__name__)

_MEDOID_EXACT_MAX = 2000  # larger clusters use the member nearest the centroid as medoid


@dataclass(frozen=True)
class RefineReport:
    split_off: int = 0
    attached: int = 0
    merged_clusters: int = 0


def _groups(labels: Labels) -> list[NDArray[np.int64]]:
    idx = np.nonzero(labels >= 0)[0]
    order = idx[np.argsort(labels[idx], kind="stable")]
    lab = labels[order]
    cuts = np.nonzero(np.diff(lab))[0] + 1
    return [g.astype(np.int64) for g in np.split(order, cuts)] if len(order) else []


def medoid(x: Embeddings, members: NDArray[np.int64]) -> int:
    """The member with the smallest summed distance to the others."""
    pts = x[members].astype(np.float64)
    if len(members) > _MEDOID_EXACT_MAX:
        c = pts.mean(axis=0)
        return int(members[np.argmin(((pts - c) ** 2).sum(axis=1))])
    sq = (pts**2).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * pts @ pts.T, 0.0))
    return int(members[np.argmin(d.sum(axis=1))])


_BATCH_ELEMENTS = 1 << 20  # float64 elements of one stack of same-size clusters (8 MB; its
# temporaries were 250 MB beyond the vectors at 1 << 22 and 512-d)


def split_far_members(x: Embeddings, labels: Labels, distance: float) -> tuple[Labels, int]:
    """Members farther than `distance` from their cluster's medoid become outliers.

    Clusters of one size are stacked and done together (the same arithmetic as `medoid`,
    batched): at 1M faces about 50k clusters, one at a time, cost a minute of Python."""
    out = labels.copy()
    n_split = 0
    groups = _groups(labels)
    sizes = np.asarray([len(g) for g in groups], dtype=np.int64)
    dim = x.shape[1]
    for size in np.unique(sizes).tolist():
        same = np.nonzero(sizes == size)[0]
        if size > _MEDOID_EXACT_MAX:
            for gid in same.tolist():
                members = groups[gid]
                m = medoid(x, members)
                d = np.linalg.norm(x[members].astype(np.float64) - x[m].astype(np.float64),
                                   axis=1)
                far = members[d > distance]
                out[far] = -1
                n_split += len(far)
            continue
        step = max(1, _BATCH_ELEMENTS // (size * max(size, dim)))
        for start in range(0, len(same), step):
            members = np.stack([groups[g] for g in same[start : start + step].tolist()])
            pts = x[members].astype(np.float64)  # (clusters, size, dim)
            sq = (pts**2).sum(axis=2)
            d = np.sqrt(np.maximum(
                sq[:, :, None] + sq[:, None, :] - 2.0 * pts @ pts.transpose(0, 2, 1), 0.0))
            m = members[np.arange(len(members)), np.argmin(d.sum(axis=2), axis=1)]
            dist = np.linalg.norm(pts - x[m].astype(np.float64)[:, None, :], axis=2)
            far = members[dist > distance]
            out[far] = -1
            n_split += len(far)
    return out, n_split


def attach_outliers(
    knn: KnnGraph,
    labels: Labels,
    distance: float,
    groups: Groups | None = None,
    x: Embeddings | None = None,
) -> tuple[Labels, int]:
    """An outlier joins the cluster of its nearest clustered kNN neighbour within `distance`.

    With `groups`, a cluster already holding a face of the outlier's photo is passed over for
    the next one; two outliers of one photo joining one cluster keep the one nearer its medoid.
    """
    out = labels.copy()
    outliers = np.nonzero(labels < 0)[0]
    if len(outliers) == 0:
        return out, 0
    nbr = knn.indices[outliers]
    lab = np.where(nbr >= 0, labels[np.maximum(nbr, 0)], -1)
    ok = (lab >= 0) & (knn.distances[outliers] <= distance)
    if groups is not None:
        r, c = np.nonzero(ok)
        taken = constraints.holds_photo(labels, groups, lab[r, c], groups[outliers[r]])
        ok[r[taken], c[taken]] = False
    has = ok.any(axis=1)
    first = ok.argmax(axis=1)
    chosen = outliers[has]
    out[chosen] = lab[has, first[has]]
    if groups is not None and x is not None:
        fixed = np.nonzero(labels >= 0)[0]
        out, dropped = constraints.enforce(x, out, groups, fixed=fixed)
        return out, int(has.sum()) - dropped
    return out, int(has.sum())


def _centroids(x: Embeddings, groups: list[NDArray[np.int64]],
               block: int = 1 << 12) -> NDArray[np.float64]:
    """Mean vector of each group, summed in float64 a block of about `block` faces at a time
    (a group's mean does not depend on which others are computed with it). Each block's sums
    are one sparse product (members in order, like a sum of rows): np.add.reduceat over rows
    in float64 took 4x as long, and the merge step computes each centroid many times. A group
    of more than `block` faces is summed a block of rows at a time, in the same order."""
    from scipy.sparse import csr_matrix

    sizes = np.asarray([len(g) for g in groups], dtype=np.int64)
    ends = np.cumsum(sizes)
    cents = np.empty((len(groups), x.shape[1]), dtype=np.float64)
    i = 0
    while i < len(groups):
        if sizes[i] > block:  # one big group: its rows in order onto a running sum
            total = np.zeros(x.shape[1])
            for s in range(0, sizes[i], block):
                rows = x[groups[i][s : s + block]].astype(np.float64)
                rows[0] += total  # the running sum, then this block's rows in order
                total = np.add.reduce(rows, axis=0)
            cents[i] = total / sizes[i]
            i += 1
            continue
        j = max(i + 1, int(np.searchsorted(ends, ends[i] - sizes[i] + block, side="right")))
        idx = np.concatenate(groups[i:j])
        indptr = np.concatenate([[0], np.cumsum(sizes[i:j])])
        member_of = csr_matrix((np.ones(len(idx)), np.arange(len(idx)), indptr),
                               shape=(j - i, len(idx)))
        cents[i:j] = (member_of @ x[idx].astype(np.float64)) / sizes[i:j, None]
        i = j
    return cents


def merge_close_clusters(
    x: Embeddings, labels: Labels, distance: float, photos: Groups | None = None
) -> tuple[Labels, int]:
    """Clusters whose centroids are closer than `distance` are merged (transitively).

    With `photos` (a group id per face), pairs are joined nearest first and a join that would
    put two faces of one photo together is skipped."""
    groups = _groups(labels)
    if len(groups) < 2:
        return labels.copy(), 0
    r_all, c_all, d_all = _close_pairs(x, groups, distance, distances=photos is not None)
    if photos is None:
        comp = components(len(groups), r_all, c_all)
    else:
        comp = _merge_without_conflicts(groups, r_all, c_all, d_all, photos)
    out = labels.copy()
    for gid, members in enumerate(groups):
        out[members] = comp[gid]
    return out, len(groups) - len(np.unique(comp))


_TILE = 4096
"""Clusters on each side of one tile of the all-pairs centroid scan: its float32 block of
squared distances is 64 MB. All centroids at once, in float64 with the scan's operands beside
them, were 1.4 GB beyond the vectors at 1M 512-d faces (about 100k clusters), the recluster's
peak."""
_PAIR_CHUNK = 8192  # close pairs whose float64 difference is taken at once (32 MB at 512-d)


def _scan_operands(x: Embeddings, groups: list[NDArray[np.int64]]
                   ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The groups' rows [c, |c|^2, 1] and [-2c, 1, |c|^2] in float32, whose product is the
    squared distances between centroids."""
    cents = _centroids(x, groups)
    sq = np.einsum("ij,ij->i", cents, cents)
    m, dim = cents.shape
    left = np.empty((m, dim + 2), dtype=np.float32)
    left[:, :dim] = cents
    left[:, dim], left[:, dim + 1] = sq, 1.0
    right = np.empty_like(left)
    np.multiply(left[:, :dim], -2.0, out=right[:, :dim])
    right[:, dim], right[:, dim + 1] = 1.0, sq
    return left, right


def _decide(x: Embeddings, groups: list[NDArray[np.int64]], r: NDArray[np.int64],
            c: NDArray[np.int64], near: NDArray[np.bool_], limit: float
            ) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """For candidate pairs of groups: which are closer than sqrt(`limit`) (those `near` the
    threshold decided in float64) and their float64 centroid distances."""
    keep = np.ones(len(r), dtype=bool)
    dist = np.empty(len(r), dtype=np.float64)
    if len(r) == 0:
        return keep, dist
    ids, at = np.unique(np.concatenate([r, c]), return_inverse=True)
    cents = _centroids(x, [groups[g] for g in ids.tolist()])
    at_r, at_c = at[: len(r)], at[len(r) :]
    for s in range(0, len(r), _PAIR_CHUNK):
        a, b = cents[at_r[s : s + _PAIR_CHUNK]], cents[at_c[s : s + _PAIR_CHUNK]]
        exact = (a**2).sum(axis=1) + (b**2).sum(axis=1) - 2.0 * np.einsum("ij,ij->i", a, b)
        keep[s : s + _PAIR_CHUNK] = ~near[s : s + _PAIR_CHUNK] | (exact < limit)
        dist[s : s + _PAIR_CHUNK] = np.linalg.norm(a - b, axis=1)
    return keep, dist


def _close_pairs(x: Embeddings, groups: list[NDArray[np.int64]], distance: float,
                 tile: int = _TILE, *, distances: bool = True
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Every pair (i, j), i < j, of groups whose centroids are closer than `distance`, in
    row-major order, and that distance (float64; with `distances` False, NaN: only the pairs
    near the threshold are computed in float64).

    The all-pairs scan (quadratic: about 100k clusters at 1M faces) runs over the upper
    triangle a tile at a time, in float32, as one matrix product per tile whose entries are
    the squared distances themselves: no pass of adds over the tile. Each tile's centroids are
    computed for it (a column block's again for each row block: the scan took 63 s at 1M
    512-d faces, against 69 s with all centroids at once), so its memory is one tile whatever
    the number of clusters. The pairs within a margin far above the float32 rounding of the
    threshold are decided in float64 (`_decide`), so the pairs are exactly those closer than
    `distance` in float64."""
    n = len(groups)
    limit = distance**2
    lo, hi = np.float32(limit - 1e-3), np.float32(limit + 1e-3)
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    dists: list[NDArray[np.float64]] = []
    d2 = np.empty((min(tile, n), min(tile, n)), dtype=np.float32)
    for i0 in range(0, n, tile):
        left, right_i = _scan_operands(x, groups[i0 : i0 + tile])
        for j0 in range(i0, n, tile):
            right = right_i if j0 == i0 else _scan_operands(x, groups[j0 : j0 + tile])[1]
            block = d2[: len(left), : len(right)]
            np.matmul(left, right.T, out=block)
            r, c = np.nonzero(block < hi)
            if j0 == i0:
                upper = c > r
                r, c = r[upper], c[upper]
            if len(r) == 0:
                continue
            near = block[r, c] >= lo
            r, c = r.astype(np.int64) + i0, c.astype(np.int64) + j0
            if distances:
                keep, dist = _decide(x, groups, r, c, near, limit)
            else:
                keep, dist = np.ones(len(r), dtype=bool), np.full(len(r), np.nan)
                keep[near] = _decide(x, groups, r[near], c[near], near[near], limit)[0]
            rows.append(r[keep])
            cols.append(c[keep])
            dists.append(dist[keep])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    r_all, c_all = np.concatenate(rows), np.concatenate(cols)
    order = np.lexsort((c_all, r_all))  # row-major, whatever the tiles: ties keep one order
    return r_all[order], c_all[order], np.concatenate(dists)[order]


def _merge_without_conflicts(
    groups: list[NDArray[np.int64]],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    d: NDArray[np.float64],
    photos: Groups,
) -> Labels:
    """Union-find over close pairs (i < j) at centroid distances `d`, nearest first, refusing
    joins of clusters sharing a photo."""
    parent = list(range(len(groups)))
    held = [set(photos[g].tolist()) for g in groups]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(d, kind="stable").tolist():
        a, b = root(int(rows[k])), root(int(cols[k]))
        if a == b or not held[a].isdisjoint(held[b]):
            continue
        if len(held[a]) < len(held[b]):
            a, b = b, a
        parent[b] = a
        held[a] |= held[b]
    return np.asarray([root(i) for i in range(len(groups))], dtype=np.int64)


def refine(
    x: Embeddings,
    knn: KnnGraph,
    labels: Labels,
    *,
    split_distance: float | None,
    attach_distance: float | None,
    merge_distance: float | None,
    groups: Groups | None = None,
) -> tuple[Labels, RefineReport]:
    """Split far members, then merge close clusters, then attach near outliers; with
    `groups` (photo per face) no step puts two faces of one photo in one cluster."""
    n_split = n_merged = n_attached = 0
    out = labels.astype(np.int64).copy()
    if split_distance is not None:
        out, n_split = split_far_members(x, out, split_distance)
    if merge_distance is not None:
        out, n_merged = merge_close_clusters(x, out, merge_distance, groups)
    if attach_distance is not None:
        out, n_attached = attach_outliers(knn, out, attach_distance, groups, x)
    report = RefineReport(split_off=n_split, attached=n_attached, merged_clusters=n_merged)
    logger.debug("refine: %s", report)
    return compact(out), report
