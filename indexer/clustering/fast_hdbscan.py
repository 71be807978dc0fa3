"""HDBSCAN that scales: FAISS kNN graph + Boruvka MST, then the steps of the hdbscan library.

The hdbscan library at 512 dimensions falls back to an O(N^2) single-threaded Prim's tree. Here
the mutual-reachability minimum spanning tree is built from a kNN graph (see `mst.py`) and is
then fed to the steps the library runs in `hdbscan_._tree_to_labels`: single linkage,
`condense_tree`, `compute_stability` and `get_clusters`, which `tree.py` computes in linear
time with the same results (the library's own `get_clusters` still serves the selection
settings other than plain excess of mass).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer.clustering.knn import KnnConfig, KnnGraph, as_float32, build_knn
from indexer.clustering.mst import MstEdges, core_distances, mutual_reachability_mst
from indexer.clustering.tree import condense, select_eom, single_linkage

logger = logging.getLogger(__name__)

CondensedTree = NDArray[np.void]  # structured: parent, child, lambda_val, child_size


@dataclass(frozen=True)
class HdbscanConfig:
    """HDBSCAN settings, named as in `hdbscan.HDBSCAN`, plus how the graph is built.

    `knn_k` neighbours per point seed the spanning tree. Up to `exact_max_faces` the tree is
    the exact one (dense searches complete it, costing O(N) each); above it, components with
    no kNN edge out are joined approximately. The kNN search itself turns approximate (IVF)
    above `knn.exact_max_faces`.
    """

    min_cluster_size: int = 2
    min_samples: int | None = 1
    cluster_selection_method: str = "eom"
    cluster_selection_epsilon: float = 0.0
    allow_single_cluster: bool = False
    knn_k: int = 24
    exact_max_faces: int = 20_000
    knn: KnnConfig = KnnConfig()


@dataclass(frozen=True)
class HdbscanOutput:
    labels: NDArray[np.int64]
    probabilities: NDArray[np.float64]
    condensed_tree: CondensedTree
    mst: MstEdges
    knn: KnnGraph
    exact: bool


def effective_min_samples(n: int, min_cluster_size: int, min_samples: int | None) -> int:
    """min_samples as the hdbscan library ends up using it."""
    m = min_cluster_size if min_samples is None else min_samples
    return max(1, min(n - 1, m))


def fast_hdbscan(
    x: NDArray[np.floating], config: HdbscanConfig | None = None, knn: KnnGraph | None = None
) -> HdbscanOutput:
    """Cluster `x` (N, D) like `hdbscan.HDBSCAN(metric="euclidean")` would, in about N log N.

    A precomputed `knn` (with at least min_samples neighbours) may be handed in to share it
    with a refinement step.
    """
    config = config or HdbscanConfig()
    if config.min_cluster_size < 2:
        raise ValueError("min_cluster_size must be at least 2")
    x = as_float32(x)
    n = x.shape[0]
    if n < 2:
        empty = np.zeros(
            0,
            dtype=[
                ("parent", np.intp),
                ("child", np.intp),
                ("lambda_val", float),
                ("child_size", np.intp),
            ],
        )
        graph = knn or KnnGraph(np.zeros((n, 0), np.int64), np.zeros((n, 0)), True)
        return HdbscanOutput(
            np.full(n, -1, np.int64), np.zeros(n), empty, np.zeros((0, 3)), graph, True
        )
    min_samples = effective_min_samples(n, config.min_cluster_size, config.min_samples)
    k = max(config.knn_k, min_samples + 1)
    t0 = time.perf_counter()
    if knn is None or knn.k < min(n - 1, min_samples):
        knn = build_knn(x, k, config.knn)
    t1 = time.perf_counter()
    core = core_distances(knn, min_samples)
    dense = n <= config.exact_max_faces
    mst = mutual_reachability_mst(x, knn, core, dense_completion=dense)
    t2 = time.perf_counter()
    mst = mst[np.argsort(mst[:, 2], kind="stable")]
    slt = single_linkage(mst)
    tree = condense(slt, config.min_cluster_size)
    labels, probabilities = _select(tree, config)
    logger.info(
        "fast_hdbscan: %d points, kNN %.1fs, spanning tree %.1fs, tree to labels %.1fs",
        n,
        t1 - t0,
        t2 - t1,
        time.perf_counter() - t2,
    )
    return HdbscanOutput(
        labels=np.asarray(labels, dtype=np.int64),
        probabilities=np.asarray(probabilities, dtype=np.float64),
        condensed_tree=tree,
        mst=mst,
        knn=knn,
        exact=dense and knn.exact,
    )


def _select(tree: CondensedTree, config: HdbscanConfig) -> tuple[NDArray[np.int64],
                                                                   NDArray[np.float64]]:
    """Flat clusters from the condensed tree, as the library's get_clusters gives them."""
    if (config.cluster_selection_method == "eom" and not config.allow_single_cluster
            and config.cluster_selection_epsilon == 0.0):
        return select_eom(tree)
    from hdbscan._hdbscan_tree import compute_stability, get_clusters

    labels, probabilities, _ = get_clusters(
        tree,
        compute_stability(tree),
        config.cluster_selection_method,
        config.allow_single_cluster,
        False,
        float(config.cluster_selection_epsilon),
    )
    return labels, probabilities
