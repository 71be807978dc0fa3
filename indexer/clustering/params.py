"""Parameters and result of one clustering run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

ALGORITHMS: tuple[str, ...] = ("hdbscan", "dbscan", "chinese-whispers", "kmeans", "agglomerative")


@dataclass(frozen=True)
class ClusterParams:
    """Every knob of every algorithm, with defaults measured on LFW dlib embeddings.

    Distances are Euclidean between L2-normalised embeddings (d = sqrt(2 - 2 cos)) on the
    dlib unit-vector scale: there, photos of one person are typically 0.32 apart (95% under
    0.39) and different people 0.57 (1% under 0.43); dlib's documented 0.6 on raw descriptors
    is 0.42 here. For another model multiply every distance field by that model's scale
    (`indexer.models.distance_scale`), as `indexer.recluster.default_params` does.
    """

    # --- HDBSCAN (names as in hdbscan.HDBSCAN) ---
    min_cluster_size: int = 2
    min_samples: int | None = 1
    cluster_selection_method: str = "eom"
    cluster_selection_epsilon: float = 0.0
    # --- refinement after HDBSCAN (the default recluster); None disables a step ---
    refine: bool = True
    # Measured on LFW (7143 dlib faces, 2943 people): plain HDBSCAN BCubed F1 0.927 -> 0.955
    # with all three; identity-disjoint halves 0.960 / 0.965. See the module docstring of
    # refine.py. A face farther than this from its cluster's medoid is split off (-1).
    split_distance: float | None = 0.34
    # Then: two clusters whose centroids (means of unit vectors) are this close are merged.
    merge_distance: float | None = 0.25
    # Last: an outlier whose nearest clustered kNN neighbour is this close joins its cluster.
    # Sensitive upwards (0.35 gives 0.93 on LFW: chains of look-alikes); keep it at or below
    # the median same-person distance.
    attach_distance: float | None = 0.33
    # --- people founded online by the watch daemon (indexer.online) ---
    # Every two faces of a person founded from unassigned faces are at most this far apart
    # (complete linkage, one face per photo, at least min_cluster_size faces). None: the
    # model's split_distance (a recluster keeps a face that close to its cluster's medoid).
    online_link_distance: float | None = None
    # --- graph construction ---
    knn_k: int = 24
    # Exact spanning tree (labels equal the hdbscan library's) up to this many faces; above,
    # components with no kNN edge out are joined approximately (ARI ~0.99 vs exact at 20k).
    exact_max_faces: int = 20_000
    knn_exact_max_faces: int = 20_000  # exhaustive kNN search up to this, FAISS IVF above
    # --- DBSCAN ---
    dbscan_eps: float = 0.32
    dbscan_min_samples: int = 2  # counting the point itself, as sklearn
    # --- Chinese whispers (dlib's face clustering) ---
    cw_threshold: float = 0.32
    cw_iterations: int = 20
    # --- k-means ---
    # None: connected components of the graph below 0.34 (LFW: 2730 for 2943 people)
    kmeans_k: int | None = None
    kmeans_estimate_distance: float = 0.34
    kmeans_iterations: int = 25
    # --- average-linkage agglomerative ---
    agglomerative_threshold: float = 0.36
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
        "knn_exact_max_faces",
    ),
    "dbscan": ("dbscan_eps", "dbscan_min_samples", "knn_k", "knn_exact_max_faces"),
    "chinese-whispers": ("cw_threshold", "cw_iterations", "knn_k", "knn_exact_max_faces", "seed"),
    "kmeans": ("kmeans_k", "kmeans_iterations", "kmeans_estimate_distance", "seed"),
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
