"""Face clustering: scalable HDBSCAN and comparison algorithms, metrics, stable identities."""

from indexer.clustering.api import UnknownAlgorithmError, cluster
from indexer.clustering.fast_hdbscan import HdbscanConfig, HdbscanOutput, fast_hdbscan
from indexer.clustering.metrics import ClusteringScores, bcubed_scores, pairwise_scores, score
from indexer.clustering.params import ALGORITHMS, ClusterParams, ClusterResult
from indexer.clustering.reconcile import ReconcileReport, reconcile

__all__ = [
    "ALGORITHMS",
    "ClusterParams",
    "ClusterResult",
    "ClusteringScores",
    "HdbscanConfig",
    "HdbscanOutput",
    "ReconcileReport",
    "UnknownAlgorithmError",
    "bcubed_scores",
    "cluster",
    "fast_hdbscan",
    "pairwise_scores",
    "reconcile",
    "score",
]
