"""metrics.json: internal cluster-quality scores, counts, and the last eval run's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .data import OUTLIER, ExportData
from .plots import sample_rows


def _round(v: float) -> float:
    return round(float(v), 6)


CHUNK = 50_000
"""Faces per block in the streaming cluster statistics (bounds their float64 copies)."""
BLOCK_VALUES = 4_000_000
"""Cluster pairs per block of the Davies-Bouldin distances (float64: 32 MB a temporary)."""
SKLEARN_WORKING_MB = 64
"""sklearn's working memory for the silhouette's distance chunks (its default is 1 GB)."""


def _cluster_stats(vectors: np.ndarray, rows: np.ndarray, inverse: np.ndarray,
                   k: int) -> tuple[np.ndarray, ...]:
    """Per cluster: size, mean (float64), summed squared and summed plain distance to that
    mean of its members (`rows` of `vectors`, in cluster `inverse`); in blocks of CHUNK
    faces, never a copy of every vector."""
    from scipy.sparse import csr_matrix

    sizes = np.bincount(inverse, minlength=k)
    sums = np.zeros((k, vectors.shape[1]))
    for s in range(0, len(rows), CHUNK):
        block = inverse[s:s + CHUNK]
        member = csr_matrix((np.ones(len(block)), (block, np.arange(len(block)))),
                            shape=(k, len(block)))
        sums += member @ vectors[rows[s:s + CHUNK]].astype(np.float64)
    means = sums / sizes[:, None]
    sq, plain = np.zeros(k), np.zeros(k)
    for s in range(0, len(rows), CHUNK):
        block = inverse[s:s + CHUNK]
        d2 = ((vectors[rows[s:s + CHUNK]].astype(np.float64) - means[block]) ** 2).sum(axis=1)
        sq += np.bincount(block, weights=d2, minlength=k)
        plain += np.bincount(block, weights=np.sqrt(d2), minlength=k)
    return sizes, means, sq, plain


def calinski_harabasz(sizes: np.ndarray, means: np.ndarray, sq: np.ndarray) -> float:
    """sklearn's calinski_harabasz_score from per-cluster statistics."""
    n, k = int(sizes.sum()), len(sizes)
    overall = (means * sizes[:, None]).sum(axis=0) / n
    extra = float((sizes * ((means - overall) ** 2).sum(axis=1)).sum())
    intra = float(sq.sum())
    return 1.0 if intra == 0.0 else extra * (n - k) / (intra * (k - 1))


def davies_bouldin(sizes: np.ndarray, means: np.ndarray, plain: np.ndarray,
                   rows: np.ndarray) -> float:
    """sklearn's davies_bouldin_score from per-cluster statistics, averaged over the clusters
    `rows` (all of them gives sklearn's value; each is compared with every cluster)."""
    spread = plain / sizes
    if np.allclose(spread, 0):
        return 0.0
    squares = (means ** 2).sum(axis=1)
    worst = np.empty(len(rows))
    step = max(1, BLOCK_VALUES // len(means))  # rows per block: about 32 MB per temporary
    for s in range(0, len(rows), step):
        block = rows[s:s + step]
        d2 = squares[block, None] + squares[None, :] - 2.0 * (means[block] @ means.T)
        d2[np.arange(len(block)), block] = 0.0  # itself: exactly 0, skipped below
        d = np.sqrt(np.clip(d2, 0.0, None), out=d2)
        d[d == 0] = np.inf
        worst[s:s + step] = ((spread[block, None] + spread[None, :]) / d).max(axis=1)
    return float(worst.mean())


def scores(data: ExportData, *, silhouette_max: int, seed: int,
           davies_bouldin_max: int = 2_000) -> dict[str, Any]:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz on the faces in clusters.

    Outliers are left out (they are no cluster). Calinski-Harabasz is computed on every face.
    Silhouette is quadratic in the number of faces: above `silhouette_max` it is computed on a
    fixed-seed sample of faces, and says so. Davies-Bouldin compares every cluster with every
    other: above `davies_bouldin_max` clusters it is averaged over a fixed-seed sample of
    clusters (each still compared with all), and says so.
    """
    from sklearn import config_context
    from sklearn.metrics import silhouette_score

    rows = np.flatnonzero(data.labels != OUTLIER)
    labels = data.labels[rows]
    cluster_ids, inverse = np.unique(labels, return_inverse=True)
    k = len(cluster_ids)
    out: dict[str, Any] = {"silhouette": None, "davies_bouldin": None,
                           "calinski_harabasz": None, "faces_scored": int(len(rows)),
                           "silhouette_sampled": None, "davies_bouldin_clusters_sampled": None,
                           "metric": "euclidean", "outliers_excluded": True}
    if k < 2 or len(rows) <= k:
        out["note"] = (f"not computed: these scores need at least 2 clusters and more faces "
                       f"than clusters ({k} clusters, {len(rows)} faces in them)")
        return out
    sizes, means, sq, plain = _cluster_stats(data.vectors, rows, inverse, k)
    out["calinski_harabasz"] = _round(calinski_harabasz(sizes, means, sq))
    picked = sample_rows(k, davies_bouldin_max, seed)
    out["davies_bouldin"] = _round(davies_bouldin(sizes, means, plain, picked))
    if len(picked) < k:
        out["davies_bouldin_clusters_sampled"] = int(len(picked))
    pick = sample_rows(len(rows), silhouette_max, seed)
    if len(np.unique(labels[pick])) >= 2 and len(pick) > len(np.unique(labels[pick])):
        with config_context(working_memory=SKLEARN_WORKING_MB):
            out["silhouette"] = _round(silhouette_score(
                data.vectors[rows[pick]].astype(np.float64), labels[pick], metric="euclidean"))
    if len(pick) < len(rows):
        out["silhouette_sampled"] = int(len(pick))
    return out


def build(data: ExportData, *, silhouette_max: int, davies_bouldin_max: int, seed: int,
          plotted: dict[str, Any]) -> dict[str, Any]:
    recluster = data.last_recluster or {}
    out: dict[str, Any] = {
        "faces": data.n_faces,
        "images_with_faces": data.images_with_faces,
        "clusters": len(data.clusters),
        "named_people": sum(1 for c in data.clusters if c.name),
        "outliers": data.outliers,
        "outlier_fraction": _round(data.outliers / data.n_faces) if data.n_faces else None,
        "largest_cluster": data.clusters[0].size if data.clusters else 0,
        "model": {"name": data.model.name, "dim": data.model.dim},
        "last_recluster": {"algorithm": recluster.get("algorithm"),
                           "params": recluster.get("params")} if recluster else None,
        "scores": scores(data, silhouette_max=silhouette_max,
                         davies_bouldin_max=davies_bouldin_max, seed=seed),
        "plots": {"viz_3d_faces": plotted.get("viz_3d"),
                  "viz_tsne_faces": plotted.get("viz_tsne"),
                  "condensed_tree": bool(plotted.get("condensed_tree"))},
        "eval": data.last_eval,
    }
    if not data.clusters:
        out["note"] = "the index has never been reclustered: every face is an outlier; " \
                      "run `faceidx recluster`"
    return out


def write(metrics: dict[str, Any], out: Path) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
