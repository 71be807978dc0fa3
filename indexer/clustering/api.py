"""One entry point for every clustering algorithm."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from indexer.clustering import algorithms, constraints
from indexer.clustering.fast_hdbscan import HdbscanConfig, effective_min_samples, fast_hdbscan
from indexer.clustering.knn import KnnConfig, KnnGraph, as_float32, build_knn
from indexer.clustering.labels import compact
from indexer.clustering.params import ALGORITHMS, ClusterParams, ClusterResult, params_for
from indexer.clustering.refine import refine

logger = logging.getLogger(__name__)


class UnknownAlgorithmError(ValueError):
    """The algorithm name is not one of ALGORITHMS."""


def _check(embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
    x = as_float32(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be an (N, D) array, got shape {x.shape}")
    step = 1 << 16  # in blocks: a mask of the whole array is 512 MB at 1M x 512
    if not all(np.isfinite(x[i : i + step]).all() for i in range(0, len(x), step)):
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def _knn(x: NDArray[np.float32], params: ClusterParams, k: int) -> KnnGraph:
    config = KnnConfig(exact_max_faces=params.knn_exact_max_faces)
    return build_knn(x, k, config, seed=params.seed)


def _hdbscan(
    x: NDArray[np.float32], params: ClusterParams, groups: constraints.Groups | None
) -> ClusterResult:
    n = x.shape[0]
    config = HdbscanConfig(
        min_cluster_size=params.min_cluster_size,
        min_samples=params.min_samples,
        cluster_selection_method=params.cluster_selection_method,
        cluster_selection_epsilon=params.cluster_selection_epsilon,
        knn_k=params.knn_k,
        exact_max_faces=params.exact_max_faces,
        knn=KnnConfig(exact_max_faces=params.knn_exact_max_faces),
    )
    ms = effective_min_samples(n, params.min_cluster_size, params.min_samples)
    knn = _knn(x, params, max(params.knn_k, ms + 1)) if n > 1 else None
    out = fast_hdbscan(x, config, knn=knn)
    details: dict[str, object] = {"exact": out.exact, "hdbscan_labels": out.labels}
    labels, ejected = constraints.enforce(x, out.labels, groups)
    details["cannot_link_split"] = ejected
    if params.refine and n > 1:
        labels, report = refine(
            x,
            out.knn,
            labels,
            split_distance=params.split_distance,
            attach_distance=params.attach_distance,
            merge_distance=params.merge_distance,
            groups=groups,
        )
        details["refine"] = asdict(report)
    return ClusterResult(
        labels=labels,
        algorithm="hdbscan",
        params={},
        seconds=0.0,
        condensed_tree=out.condensed_tree,
        probabilities=out.probabilities,
        details=details,
    )


def cluster(
    embeddings: NDArray[np.floating],
    algorithm: str = "hdbscan",
    params: ClusterParams | None = None,
    groups: ArrayLike | None = None,
) -> ClusterResult:
    """Cluster (N, D) L2-normalised face embeddings; label -1 marks outliers.

    The default (HDBSCAN plus refinement, default ClusterParams) is the recommended recluster.
    `groups` gives each face's photo: faces of one photo never share a cluster (cannot-link);
    where an algorithm put them together, the face nearest the cluster's medoid stays.
    """
    if algorithm not in ALGORITHMS:
        raise UnknownAlgorithmError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
    params = params or ClusterParams()
    start = time.perf_counter()
    x = _check(embeddings)
    n = x.shape[0]
    photos = constraints.as_groups(groups, n)
    if algorithm == "hdbscan":
        result = _hdbscan(x, params, photos)
    else:
        if n < 2:
            labels = np.full(n, -1, dtype=np.int64)
        elif algorithm == "dbscan":
            knn = _knn(x, params, max(params.knn_k, params.dbscan_min_samples))
            labels = algorithms.dbscan(knn, params.dbscan_eps, params.dbscan_min_samples)
        elif algorithm == "chinese-whispers":
            knn = _knn(x, params, params.knn_k)
            labels = algorithms.chinese_whispers(
                knn, params.cw_threshold, params.cw_iterations, params.seed
            )
        elif algorithm == "kmeans":
            k = params.kmeans_k
            if k is None:
                knn = _knn(x, params, params.knn_k)
                k = algorithms.estimate_k(knn, params.kmeans_estimate_distance)
            labels = algorithms.kmeans(x, k, params.kmeans_iterations, params.seed)
        else:
            labels = algorithms.agglomerative(
                x, params.agglomerative_threshold, params.agglomerative_max_faces
            )
        result = ClusterResult(labels=labels, algorithm=algorithm, params={}, seconds=0.0)
    if photos is not None:
        labels, ejected = constraints.enforce(x, result.labels, photos)
        result.labels = compact(labels)
        result.details["cannot_link_split"] = (
            int(result.details.get("cannot_link_split", 0)) + ejected)
    result.params = params_for(algorithm, params)
    result.seconds = time.perf_counter() - start
    logger.info(
        "%s: %d faces -> %d clusters, %d outliers in %.2fs",
        algorithm,
        n,
        result.n_clusters,
        result.n_outliers,
        result.seconds,
    )
    return result
