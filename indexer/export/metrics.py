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


def scores(data: ExportData, *, silhouette_max: int, seed: int) -> dict[str, Any]:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz on the faces in clusters.

    Outliers are left out (they are no cluster). Silhouette is quadratic in the number of
    faces; above `silhouette_max` it is computed on a fixed-seed sample, and says so.
    """
    from sklearn.metrics import (
        calinski_harabasz_score,
        davies_bouldin_score,
        silhouette_score,
    )

    rows = np.flatnonzero(data.labels != OUTLIER)
    labels = data.labels[rows]
    k = len(np.unique(labels))
    out: dict[str, Any] = {"silhouette": None, "davies_bouldin": None,
                           "calinski_harabasz": None, "faces_scored": int(len(rows)),
                           "silhouette_sampled": None, "metric": "euclidean",
                           "outliers_excluded": True}
    if k < 2 or len(rows) <= k:
        out["note"] = (f"not computed: these scores need at least 2 clusters and more faces "
                       f"than clusters ({k} clusters, {len(rows)} faces in them)")
        return out
    x = data.vectors[rows].astype(np.float64)
    out["davies_bouldin"] = _round(davies_bouldin_score(x, labels))
    out["calinski_harabasz"] = _round(calinski_harabasz_score(x, labels))
    pick = sample_rows(len(rows), silhouette_max, seed)
    if len(np.unique(labels[pick])) >= 2 and len(pick) > len(np.unique(labels[pick])):
        out["silhouette"] = _round(silhouette_score(x[pick], labels[pick], metric="euclidean"))
    if len(pick) < len(rows):
        out["silhouette_sampled"] = int(len(pick))
    return out


def build(data: ExportData, *, silhouette_max: int, seed: int,
          plotted: dict[str, Any]) -> dict[str, Any]:
    recluster = data.last_recluster or {}
    out: dict[str, Any] = {
        "faces": len(data.faces),
        "images_with_faces": data.images_with_faces,
        "clusters": len(data.clusters),
        "named_people": sum(1 for c in data.clusters if c.name),
        "outliers": data.outliers,
        "outlier_fraction": _round(data.outliers / len(data.faces)) if data.faces else None,
        "largest_cluster": data.clusters[0].size if data.clusters else 0,
        "model": {"name": data.model.name, "dim": data.model.dim},
        "last_recluster": {"algorithm": recluster.get("algorithm"),
                           "params": recluster.get("params")} if recluster else None,
        "scores": scores(data, silhouette_max=silhouette_max, seed=seed),
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
