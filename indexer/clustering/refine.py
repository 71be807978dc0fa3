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
               block: int = 1 << 14) -> NDArray[np.float64]:
    """Mean vector of each group, summed in float64 a block of about `block` faces at a time."""
    sizes = np.asarray([len(g) for g in groups], dtype=np.int64)
    ends = np.cumsum(sizes)
    cents = np.empty((len(groups), x.shape[1]), dtype=np.float64)
    i = 0
    while i < len(groups):
        j = max(i + 1, int(np.searchsorted(ends, ends[i] - sizes[i] + block, side="right")))
        idx = np.concatenate(groups[i:j])
        starts = np.concatenate([[0], np.cumsum(sizes[i : j - 1])])
        sums = np.add.reduceat(x[idx], starts, axis=0, dtype=np.float64)
        cents[i:j] = sums / sizes[i:j, None]
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
    cents = _centroids(x, groups)
    r_all, c_all = _close_pairs(cents, distance)
    if photos is None:
        comp = components(len(groups), r_all, c_all)
    else:
        comp = _merge_without_conflicts(groups, cents, r_all, c_all, photos)
    out = labels.copy()
    for gid, members in enumerate(groups):
        out[members] = comp[gid]
    return out, len(groups) - len(np.unique(comp))


def _close_pairs(cents: NDArray[np.float64], distance: float
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every pair (i, j), i < j, of centroids closer than `distance`.

    The all-pairs scan (quadratic: about 50k clusters at 1M faces) runs over the upper
    triangle only, in float32, as one matrix product per block whose entries are the squared
    distances themselves (rows [c, |c|^2, 1] against [-2c, 1, |c|^2]): no pass of adds over
    the block. The pairs within a margin far above its rounding of the threshold are decided
    in float64, so the pairs are exactly those closer than `distance` in float64."""
    sq = (cents**2).sum(axis=1)
    n = len(cents)
    ones = np.ones((n, 1))
    left = np.hstack([cents, sq[:, None], ones]).astype(np.float32)
    right = np.hstack([-2.0 * cents, ones, sq[:, None]]).astype(np.float32)
    limit = distance**2
    lo, hi = np.float32(limit - 1e-3), np.float32(limit + 1e-3)
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    block = max(1, (1 << 24) // max(n, 1))
    for start in range(0, n, block):
        end = min(n, start + block)
        d2 = left[start:end] @ right[start:].T  # columns from `start`: the upper triangle
        r, cc = np.nonzero(d2 < hi)
        near = d2[r, cc] >= lo
        r = r.astype(np.int64) + start
        cc = cc.astype(np.int64) + start
        upper = cc > r
        r, cc, near = r[upper], cc[upper], near[upper]
        rn, cn = r[near], cc[near]
        exact = sq[rn] + sq[cn] - 2.0 * np.einsum("ij,ij->i", cents[rn], cents[cn])
        keep = ~near
        keep[np.nonzero(near)[0][exact < limit]] = True
        rows.append(r[keep])
        cols.append(cc[keep])
    return np.concatenate(rows), np.concatenate(cols)


def _merge_without_conflicts(
    groups: list[NDArray[np.int64]],
    cents: NDArray[np.float64],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    photos: Groups,
) -> Labels:
    """Union-find over close pairs (i < j), nearest first, refusing joins of clusters sharing
    a photo."""
    d = np.linalg.norm(cents[rows] - cents[cols], axis=1)
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
