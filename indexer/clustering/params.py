"""Parameters and result of one clustering run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

ALGORITHMS: tuple[str, ...] = ("hdbscan", "dbscan", "chinese-whispers", "kmeans", "agglomerative")


@dataclass(frozen=True)
class ClusterParams:
    """Every knob of every algorithm, with defaults measured on dlib (128-d) LFW embeddings.

    Distances are Euclidean between L2-normalised embeddings (d = sqrt(2 - 2 cos)); they are on
    dlib's scale, where 0.6 is the well-known same-person threshold. For another model (e.g.
    facenet, 512-d) the distance thresholds must be re-measured for that model.
    """

    # --- HDBSCAN (names as in hdbscan.HDBSCAN) ---
    min_cluster_size: int = 2
    min_samples: int | None = 1
    cluster_selection_method: str = "eom"
    cluster_selection_epsilon: float = 0.0
    # --- refinement after HDBSCAN (the default recluster); None disables a step ---
    refine: bool = True
    # A face farther than this from its cluster's medoid is split off as an outlier.
    split_distance: float | None = 0.6
    # An outlier whose nearest clustered face in its cluster is this close joins that cluster.
    attach_distance: float | None = 0.45
    # Two clusters whose centroids are this close are merged.
    merge_distance: float | None = None
    # --- graph construction ---
    knn_k: int = 24
    exact_max_faces: int = 200_000  # exact kNN and exact spanning tree up to this many faces
    # --- DBSCAN ---
    dbscan_eps: float = 0.45
    dbscan_min_samples: int = 2  # counting the point itself, as sklearn
    # --- Chinese whispers (dlib's face clustering) ---
    cw_threshold: float = 0.5
    cw_iterations: int = 20
    # --- k-means ---
    kmeans_k: int | None = None  # None: connected components of the graph below cw_threshold
    kmeans_iterations: int = 25
    # --- average-linkage agglomerative ---
    agglomerative_threshold: float = 0.55
    agglomerative_max_faces: int = 40_000
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_ALGORITHM_FIELDS: dict[str, tuple[str, ...]] = {
    "hdbscan": (
        "min_cluster_size",
        "min_samples",
        "cluster_selection_method",
        "cluster_selection_epsilon",
        "refine",
        "split_distance",
        "attach_distance",
        "merge_distance",
        "knn_k",
        "exact_max_faces",
    ),
    "dbscan": ("dbscan_eps", "dbscan_min_samples", "knn_k", "exact_max_faces"),
    "chinese-whispers": ("cw_threshold", "cw_iterations", "knn_k", "exact_max_faces", "seed"),
    "kmeans": ("kmeans_k", "kmeans_iterations", "cw_threshold", "seed"),
    "agglomerative": ("agglomerative_threshold", "agglomerative_max_faces"),
}


def params_for(algorithm: str, params: ClusterParams) -> dict[str, Any]:
    """The parameters that `algorithm` actually reads."""
    full = params.as_dict()
    return {name: full[name] for name in _ALGORITHM_FIELDS[algorithm]}


@dataclass
class ClusterResult:
    """Labels per face (-1 = outlier) and how they were made.

    `condensed_tree` is the hdbscan library's structured array (parent, child, lambda_val,
    child_size) for HDBSCAN runs, usable with `hdbscan.plots.CondensedTree`; None otherwise.
    """

    labels: NDArray[np.int64]
    algorithm: str
    params: dict[str, Any]
    seconds: float
    condensed_tree: NDArray[np.void] | None = None
    probabilities: NDArray[np.float64] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return len(np.unique(self.labels[self.labels >= 0]))

    @property
    def n_outliers(self) -> int:
        return int((self.labels < 0).sum())
