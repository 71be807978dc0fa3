"""What export reads from the index: one consistent snapshot, read and then released."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..settings import Settings
from ..store import Store, StoredFace
from ..types import Matrix, ModelInfo

log = logging.getLogger(__name__)

OUTLIER = -1


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: int
    name: str | None
    size: int
    medoid_face_id: int
    folder: str

    @property
    def label(self) -> str:
        """How plots and grids name the cluster: its id, and the person's name if any."""
        return f"cluster {self.cluster_id} · {self.name}" if self.name \
            else f"cluster {self.cluster_id}"


@dataclass(frozen=True)
class ExportData:
    """Every face (by face id) with its vector, cluster, and distance to that cluster's centroid."""

    faces: list[StoredFace]
    vectors: Matrix
    labels: np.ndarray  # cluster id per face, OUTLIER for none
    distances: np.ndarray  # to the face's own (unit) centroid, nan for outliers
    clusters: list[ClusterInfo]  # largest first, then by id
    model: ModelInfo
    images_with_faces: int
    last_recluster: dict[str, Any] | None
    last_eval: dict[str, Any] | None
    condensed_tree: np.ndarray | None

    @property
    def outliers(self) -> int:
        return int((self.labels == OUTLIER).sum())

    def cluster(self, cluster_id: int) -> ClusterInfo:
        return next(c for c in self.clusters if c.cluster_id == cluster_id)


def folder_name(cluster_id: int, name: str | None) -> str:
    """`cluster_<id>`, or `<id>_<name>` for a named person (made safe for any file system)."""
    if not name:
        return f"cluster_{cluster_id}"
    safe = re.sub(r"[^\w.-]+", "_", name.strip()).strip("._") or "person"
    return f"{cluster_id}_{safe[:80]}"


def read(store: Store, settings: Settings) -> ExportData:
    """Read everything export needs in one go; the caller can release the catalog after."""
    faces = store.faces()
    ids, vectors = store.embeddings()
    if not np.array_equal(ids, np.asarray([f.face_id for f in faces], dtype=np.int64)):
        raise RuntimeError("faces and embeddings disagree; was the index written meanwhile?")
    names = {int(k): v for k, v in store.cluster_names().items() if k is not None}
    medoids = {p.cluster_id: p.medoid_face_id for p in store.people()}
    stored_ids, stored_centroids, _ = store.centroids()
    centroid_of = {int(c): stored_centroids[i] for i, c in enumerate(stored_ids.tolist())}
    labels = np.asarray([OUTLIER if f.cluster_id is None or f.cluster_id < 0 else f.cluster_id
                         for f in faces], dtype=np.int64)
    distances = np.full(len(faces), np.nan)
    clusters = []
    for cid in np.unique(labels[labels != OUTLIER]).tolist():
        rows = np.flatnonzero(labels == cid)
        centroid = centroid_of.get(cid)
        if centroid is None:  # a cluster row without a centroid: use its members' mean
            centroid = vectors[rows].mean(axis=0)
        unit = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        d = np.sqrt(np.clip(2.0 - 2.0 * vectors[rows] @ unit, 0.0, None))
        distances[rows] = d
        member_ids = {faces[r].face_id for r in rows}
        medoid = medoids.get(cid)
        if medoid not in member_ids:  # stale (the face moved or went): nearest the centroid
            medoid = faces[rows[int(np.argmin(d))]].face_id
        clusters.append(ClusterInfo(cluster_id=cid, name=names.get(cid), size=len(rows),
                                    medoid_face_id=int(medoid),
                                    folder=folder_name(cid, names.get(cid))))
    clusters.sort(key=lambda c: (-c.size, c.cluster_id))
    last_recluster = _json_meta(store, "last_recluster")
    tree = None
    tree_path = settings.home / "condensed_tree.npy"
    if last_recluster and last_recluster.get("algorithm") == "hdbscan" and tree_path.exists():
        tree = np.load(tree_path, allow_pickle=False)
    return ExportData(faces=faces, vectors=vectors, labels=labels, distances=distances,
                      clusters=clusters, model=store.model,
                      images_with_faces=len({f.image_id for f in faces}),
                      last_recluster=last_recluster, last_eval=_json_meta(store, "last_eval"),
                      condensed_tree=tree)


def _json_meta(store: Store, key: str) -> dict[str, Any] | None:
    raw = store.get_meta(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("meta %s is not JSON; ignored", key)
        return None
    return value if isinstance(value, dict) else None
