"""What export reads from the index: every face's ids, cluster and vector as arrays, read page
by page inside one snapshot, and each cluster with its medoid and each face's distance to its
cluster's centroid. Nothing here holds a Python object per face."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..settings import Settings
from ..store import Store, distance_to_unit
from ..types import Matrix, ModelInfo

log = logging.getLogger(__name__)

OUTLIER = -1
PAGE = 50_000
"""Faces read per catalog query (vectors, then CSV rows): bounds the memory of one read."""


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
    """Every face (row i, by face id) with its vector, cluster, and distance to that cluster's
    centroid; the clusters largest first."""

    face_ids: np.ndarray  # int64, sorted
    image_ids: np.ndarray  # int64
    vectors: Matrix  # float32
    labels: np.ndarray  # cluster id per face, OUTLIER for none
    distances: np.ndarray  # to the face's own (unit) centroid, nan for outliers
    clusters: list[ClusterInfo]  # largest first, then by id
    model: ModelInfo
    images_with_faces: int
    last_recluster: dict[str, Any] | None
    last_eval: dict[str, Any] | None
    condensed_tree: np.ndarray | None

    @property
    def n_faces(self) -> int:
        return len(self.face_ids)

    @property
    def outliers(self) -> int:
        return int((self.labels == OUTLIER).sum())

    def rows_of(self, face_ids: np.ndarray) -> np.ndarray:
        """Row numbers of these face ids (each must be in the export)."""
        return np.searchsorted(self.face_ids, face_ids)


def folder_name(cluster_id: int, name: str | None) -> str:
    """`cluster_<id>`, or `<id>_<name>` for a named person (made safe for any file system)."""
    if not name:
        return f"cluster_{cluster_id}"
    safe = re.sub(r"[^\w.-]+", "_", name.strip()).strip("._") or "person"
    return f"{cluster_id}_{safe[:80]}"


def _read_arrays(store: Store, page: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Matrix]:
    n = store.counts().faces
    face_ids = np.empty(n, dtype=np.int64)
    image_ids = np.empty(n, dtype=np.int64)
    labels = np.empty(n, dtype=np.int64)
    vectors = np.empty((n, store.model.dim), dtype=np.float32)
    at = 0
    for ids, images, clusters, vecs in store.embedding_pages(page):
        if at + len(ids) > n:
            raise RuntimeError("the catalog grew while it was read; was the snapshot lost?")
        face_ids[at:at + len(ids)] = ids
        image_ids[at:at + len(ids)] = images
        labels[at:at + len(ids)] = clusters
        vectors[at:at + len(ids)] = vecs
        at += len(ids)
    if at != n:
        raise RuntimeError("the catalog changed while it was read; was the snapshot lost?")
    labels[labels < 0] = OUTLIER
    return face_ids, image_ids, labels, vectors


def _distances(vectors: Matrix, labels: np.ndarray, cluster_ids: np.ndarray,
               stored: dict[int, np.ndarray], page: int) -> np.ndarray:
    """Each clustered face's distance to its cluster's unit centroid (the stored centroid, or
    its members' mean when the cluster has none stored); nan for outliers."""
    centroids = np.zeros((len(cluster_ids), vectors.shape[1]), dtype=np.float32)
    clustered = np.flatnonzero(labels != OUTLIER)
    slot = np.searchsorted(cluster_ids, labels[clustered])
    have = np.asarray([int(c) in stored for c in cluster_ids.tolist()], dtype=bool)
    for i in np.flatnonzero(have).tolist():
        centroids[i] = stored[int(cluster_ids[i])]
    if not have.all():  # a cluster row without a centroid: use its members' mean
        for i in np.flatnonzero(~have).tolist():
            centroids[i] = vectors[clustered[slot == i]].mean(axis=0)
    norms = np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    unit = (centroids / norms).astype(np.float32)
    distances = np.full(len(labels), np.nan)
    for start in range(0, len(clustered), page):
        rows, slots = clustered[start:start + page], slot[start:start + page]
        distances[rows] = distance_to_unit(vectors[rows], unit[slots])
    return distances


def _clusters(store: Store, face_ids: np.ndarray, labels: np.ndarray,
              distances: np.ndarray, cluster_ids: np.ndarray,
              sizes: np.ndarray) -> list[ClusterInfo]:
    names = {int(k): v for k, v in store.cluster_names().items() if k is not None}
    medoids = {p.cluster_id: p.medoid_face_id for p in store.people()}
    # the face nearest each centroid, for clusters whose stored medoid moved or went
    order = np.lexsort((face_ids, distances, labels))
    first = order[np.searchsorted(labels[order], cluster_ids)]
    clusters = []
    for cid, size, nearest in zip(cluster_ids.tolist(), sizes.tolist(), first.tolist(),
                                  strict=True):
        medoid = medoids.get(cid)
        row = int(np.searchsorted(face_ids, medoid)) if medoid is not None else len(face_ids)
        if row >= len(face_ids) or face_ids[row] != medoid or labels[row] != cid:
            medoid = int(face_ids[nearest])
        clusters.append(ClusterInfo(cluster_id=cid, name=names.get(cid), size=int(size),
                                    medoid_face_id=int(medoid),
                                    folder=folder_name(cid, names.get(cid))))
    clusters.sort(key=lambda c: (-c.size, c.cluster_id))
    return clusters


def read(store: Store, settings: Settings, page: int = PAGE) -> ExportData:
    """Read everything export needs but the CSV rows; call inside `store.snapshot()`."""
    face_ids, image_ids, labels, vectors = _read_arrays(store, page)
    cluster_ids, sizes = np.unique(labels[labels != OUTLIER], return_counts=True)
    stored_ids, stored_centroids, _ = store.centroids()
    stored = {int(c): stored_centroids[i] for i, c in enumerate(stored_ids.tolist())}
    distances = _distances(vectors, labels, cluster_ids, stored, page)
    clusters = _clusters(store, face_ids, labels, distances, cluster_ids, sizes)
    last_recluster = _json_meta(store, "last_recluster")
    tree = None
    tree_path = settings.home / "condensed_tree.npy"
    if last_recluster and last_recluster.get("algorithm") == "hdbscan" and tree_path.exists():
        tree = np.load(tree_path, allow_pickle=False)
    return ExportData(face_ids=face_ids, image_ids=image_ids, vectors=vectors, labels=labels,
                      distances=distances, clusters=clusters, model=store.model,
                      images_with_faces=len(np.unique(image_ids)),
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
