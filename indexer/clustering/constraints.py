"""Cannot-link within a photo: no cluster holds two faces of one image.

Two faces in one photo are two people, the strongest evidence a library has. Each face carries
a group id (its image id); faces sharing a group never share a cluster. Where a cluster holds
several faces of one group, the one nearest the cluster's medoid stays and the others become
outliers (-1), except `fixed` faces (put there by the user's hand), which always stay.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from indexer.clustering.knn import Embeddings
from indexer.clustering.labels import Labels

Groups = NDArray[np.int64]


def as_groups(groups: ArrayLike | None, n: int) -> Groups | None:
    """Dense group ids 0..G-1, one per face (None: no constraint)."""
    if groups is None:
        return None
    arr = np.asarray(groups, dtype=np.int64)
    if arr.shape != (n,):
        raise ValueError(f"groups must hold one id per face ({n}), got shape {arr.shape}")
    _, dense = np.unique(arr, return_inverse=True)
    return dense.reshape(-1).astype(np.int64)


def _duplicate_cells(labels: Labels, groups: Groups) -> tuple[NDArray[np.int64], Labels]:
    """Faces in a (cluster, group) cell holding more than one face, and each one's cell key."""
    idx = np.nonzero(labels >= 0)[0]
    if len(idx) == 0:
        return idx, np.zeros(0, dtype=np.int64)
    # one int64 key per (cluster, group), in the order of the pairs: np.unique over rows
    # sorts several times slower at 1M faces
    g = groups[idx]
    base = int(g.min())
    width = int(g.max()) - base + 1
    keys = labels[idx] * width + (g - base)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    dup = counts[inverse] > 1
    return idx[dup], inverse[dup]


def violations(labels: ArrayLike, groups: ArrayLike) -> int:
    """Faces beyond the first of their photo in their cluster (0 when the constraint holds)."""
    lab = np.asarray(labels, dtype=np.int64)
    grp = np.asarray(groups, dtype=np.int64)
    faces, cells = _duplicate_cells(lab, grp)
    return int(len(faces) - len(np.unique(cells)))


def _medoid(x: Embeddings, members: NDArray[np.int64]) -> int:
    from indexer.clustering.refine import medoid  # refine imports this module

    return medoid(x, members)


def enforce(
    x: Embeddings,
    labels: ArrayLike,
    groups: ArrayLike | None,
    fixed: ArrayLike | None = None,
) -> tuple[Labels, int]:
    """Labels with at most one face per (cluster, photo) apart from `fixed` faces.

    In each cluster holding two or more faces of one photo, fixed faces stay; if none is
    fixed, the face nearest the cluster's medoid stays. The others become -1. Returns the
    new labels and how many faces were taken out.
    """
    out = np.asarray(labels, dtype=np.int64).copy()
    if groups is None or len(out) == 0:
        return out, 0
    grp = np.asarray(groups, dtype=np.int64)
    is_fixed = np.zeros(len(out), dtype=bool)
    if fixed is not None:
        is_fixed[np.asarray(fixed, dtype=np.int64)] = True
    faces, cells = _duplicate_cells(out, grp)
    if len(faces) == 0:
        return out, 0
    medoids: dict[int, int] = {}
    ejected = 0
    order = np.argsort(cells, kind="stable")
    faces, cells = faces[order], cells[order]
    cuts = np.nonzero(np.diff(cells))[0] + 1
    # members of a cluster: a slice of the faces sorted by label (one sort, not a scan of
    # every label per cluster: at 1M faces thousands of clusters hold a duplicate)
    by_label = np.argsort(out, kind="stable")
    sorted_labels = out[by_label]
    for cell in np.split(faces, cuts):
        keep = cell[is_fixed[cell]]
        if len(keep) == 0:
            cid = int(out[cell[0]])
            if cid not in medoids:
                lo, hi = np.searchsorted(sorted_labels, [cid, cid + 1])
                members = by_label[lo:hi]
                medoids[cid] = _medoid(x, members[out[members] == cid].astype(np.int64))
            m = x[medoids[cid]].astype(np.float64)
            d = np.linalg.norm(x[cell].astype(np.float64) - m, axis=1)
            keep = cell[[int(np.argmin(d))]]
        drop = np.setdiff1d(cell, keep)
        out[drop] = -1
        ejected += len(drop)
    return out, ejected


def holds_photo(
    labels: Labels, groups: Groups, clusters: ArrayLike, photos: ArrayLike
) -> NDArray[np.bool_]:
    """For each (cluster, photo) query pair: does that cluster already hold a face of it?"""
    held = labels >= 0
    width = int(max(groups.max(initial=0), np.max(photos, initial=0))) + 1
    keys = np.unique(labels[held] * width + groups[held])
    return np.isin(np.asarray(clusters, np.int64) * width + np.asarray(photos, np.int64), keys)
