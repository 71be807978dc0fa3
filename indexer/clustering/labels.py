"""Small helpers on label arrays."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Labels = NDArray[np.int64]


def compact(labels: ArrayLike, min_size: int = 2) -> Labels:
    """Renumber clusters 0..K-1 by first appearance; clusters smaller than `min_size` -> -1."""
    arr = np.asarray(labels, dtype=np.int64)
    out = np.full(arr.shape, -1, dtype=np.int64)
    keep = arr >= 0
    if not keep.any():
        return out
    uniq, first, inverse, counts = np.unique(
        arr[keep], return_index=True, return_inverse=True, return_counts=True
    )
    big = counts >= min_size
    order = np.argsort(first[big], kind="stable")
    new_id = np.full(len(uniq), -1, dtype=np.int64)
    new_id[np.nonzero(big)[0][order]] = np.arange(int(big.sum()))
    out[keep] = new_id[inverse]
    return out


def components(n: int, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> Labels:
    """Connected components of the undirected graph with the given edges (isolated nodes too)."""
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, lab = connected_components(graph, directed=False)
    return lab.astype(np.int64)
