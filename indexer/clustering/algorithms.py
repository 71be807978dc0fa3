"""The comparison algorithms: DBSCAN, Chinese whispers, k-means, average-linkage agglomerative.

DBSCAN and Chinese whispers run over the FAISS kNN graph so they scale like HDBSCAN does.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
from numpy.typing import NDArray

from indexer.clustering.knn import Embeddings, KnnGraph
from indexer.clustering.labels import Labels, compact, components

logger = logging.getLogger(__name__)


def _edges_below(knn: KnnGraph, threshold: float) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    rows, cols = np.nonzero((knn.indices >= 0) & (knn.distances < threshold))
    return rows.astype(np.int64), knn.indices[rows, cols]


def dbscan(knn: KnnGraph, eps: float, min_samples: int) -> Labels:
    """DBSCAN (sklearn's conventions: a core point has `min_samples` points, itself included,
    within `eps`) over the kNN graph. Exact while no point has more than k neighbours within
    eps that matter for connectivity; border points join their nearest core point's cluster."""
    n = knn.indices.shape[0]
    need = min_samples - 1  # other points
    if need <= 0:
        core = np.ones(n, dtype=bool)
    elif need > knn.k:
        raise ValueError(f"dbscan min_samples={min_samples} needs a kNN graph with k >= {need}")
    else:
        core = knn.distances[:, need - 1] <= eps
    within = (knn.indices >= 0) & (knn.distances <= eps)
    rows, cols = np.nonzero(within)
    nbr = knn.indices[rows, cols]
    both = core[rows] & core[nbr]
    comp = components(n, rows[both].astype(np.int64), nbr[both])
    labels = np.where(core, comp, -1)
    # Border points: the nearest core point within eps in their own list, else in a core's list.
    border = ~core
    core_nbr = within & core[np.maximum(knn.indices, 0)]
    has = border & core_nbr.any(axis=1)
    first = core_nbr.argmax(axis=1)
    idx = np.nonzero(has)[0]
    labels[idx] = comp[knn.indices[idx, first[idx]]]
    rev = core[rows] & border[nbr] & (labels[nbr] < 0)
    labels[nbr[rev]] = comp[rows[rev]]
    return compact(labels)


def chinese_whispers(knn: KnnGraph, threshold: float, iterations: int, seed: int) -> Labels:
    """dlib's Chinese whispers: an unweighted graph of pairs closer than `threshold` (kNN
    edges only), label propagation in random order; singletons become -1."""
    n = knn.indices.shape[0]
    rows, cols = _edges_below(knn, threshold)
    a = np.concatenate([rows, cols])
    b = np.concatenate([cols, rows])
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b = a[keep], b[keep]
    starts = np.searchsorted(a, np.arange(n + 1))
    adjacency = [b[starts[i] : starts[i + 1]].tolist() for i in range(n)]
    labels = list(range(n))
    rng = np.random.default_rng(seed)
    nodes = np.nonzero(np.diff(starts) > 0)[0]
    for it in range(iterations):
        changed = 0
        for i in rng.permutation(nodes).tolist():
            counts: dict[int, int] = {}
            for j in adjacency[i]:
                lab = labels[j]
                counts[lab] = counts.get(lab, 0) + 1
            best = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))[0]
            if best != labels[i]:
                labels[i] = best
                changed += 1
        logger.debug("chinese whispers iteration %d: %d changes", it, changed)
        if changed == 0:
            break
    return compact(np.asarray(labels, dtype=np.int64))


def estimate_k(knn: KnnGraph, threshold: float) -> int:
    """Number of identities guessed as connected components of the graph below `threshold`."""
    n = knn.indices.shape[0]
    rows, cols = _edges_below(knn, threshold)
    return int(len(np.unique(components(n, rows, cols))))


def kmeans(x: Embeddings, k: int, iterations: int, seed: int, sklearn_max: int = 50_000) -> Labels:
    """k-means: sklearn's (k-means++ seeding, which matters with thousands of small clusters)
    up to `sklearn_max` faces, faiss's above; clusters of one face become -1."""
    n, dim = x.shape
    k = max(1, min(k, n))
    if n <= sklearn_max:
        from sklearn.cluster import KMeans

        model = KMeans(k, n_init=1, max_iter=iterations, random_state=seed)
        return compact(model.fit_predict(x).astype(np.int64))
    km = faiss.Kmeans(dim, k, niter=iterations, seed=seed, max_points_per_centroid=n)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return compact(assign[:, 0].astype(np.int64))


def agglomerative(x: Embeddings, threshold: float, max_faces: int) -> Labels:
    """Average-linkage agglomerative clustering cut at `threshold` (sklearn, O(N^2) memory)."""
    from sklearn.cluster import AgglomerativeClustering

    if x.shape[0] > max_faces:
        raise ValueError(
            f"agglomerative clustering needs O(N^2) memory; {x.shape[0]} faces is over the "
            f"limit of {max_faces} (agglomerative_max_faces)"
        )
    if x.shape[0] < 2:
        return np.full(x.shape[0], -1, dtype=np.int64)
    model = AgglomerativeClustering(
        n_clusters=None, metric="euclidean", linkage="average", distance_threshold=threshold
    )
    return compact(model.fit_predict(x).astype(np.int64))
