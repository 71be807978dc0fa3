"""Recluster the whole index: read a snapshot, cluster, keep identities stable, write back.

The snapshot is read, the catalog released, the clustering computed, and the result written in
one transaction, so a watch daemon beside it waits only for the read and the write. Names,
pinned faces and rejections come from the store and are honoured by `reconcile`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .clustering import ClusterParams, cluster, reconcile
from .models import CLUSTER_DISTANCES, distance_scale
from .settings import Settings
from .store import ClusterRow, Store

log = logging.getLogger(__name__)

_DISTANCE_FIELDS = ("split_distance", "attach_distance", "merge_distance",
                    "cluster_selection_epsilon", "dbscan_eps", "cw_threshold",
                    "agglomerative_threshold", "online_link_distance")
MEDOID_EXACT_MAX = 2000
"""Clusters up to this size get an exact medoid; larger ones the member nearest the centroid."""


def default_params(model_name: str, **overrides: Any) -> ClusterParams:
    """The measured defaults, on the distance scale of `model_name`."""
    params = ClusterParams()
    scale = distance_scale(model_name)  # ClusterParams' distances are set on dlib's scale
    if model_name in CLUSTER_DISTANCES:  # measured for this model
        params = replace(params, **CLUSTER_DISTANCES[model_name])
    elif scale != 1.0:
        scaled = {f: getattr(params, f) * scale for f in _DISTANCE_FIELDS
                  if getattr(params, f) is not None}
        params = replace(params, **scaled)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(params, **overrides) if overrides else params


@dataclass(frozen=True)
class ReclusterReport:
    algorithm: str
    params: dict[str, Any]
    faces: int
    clusters: int
    outliers: int
    kept: int
    new: int
    dissolved: int
    named_kept: int
    faces_moved: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.clusters} people from {self.faces} faces: {self.kept} kept, "
                f"{self.new} new, {self.dissolved} dissolved; {self.faces_moved} faces moved, "
                f"{self.outliers} unassigned")


def recluster_due(new_faces: int, faces_before: int, seconds_since_last: float,
                  settings: Settings, *, drained: bool) -> str | None:
    """Why the watch daemon's periodic recluster is due now, or None.

    Due once the index grew by `recluster_growth` (a fraction of the faces at the last
    recluster) or by `recluster_every` faces, whichever comes first, and never sooner than
    `recluster_interval` seconds after the last one. With no minimum interval it waits for the
    queue to drain. `recluster_every` 0 turns the periodic recluster off.
    """
    if new_faces <= 0 or settings.recluster_every <= 0:
        return None
    if seconds_since_last < settings.recluster_interval:
        return None
    if settings.recluster_interval <= 0 and not drained:
        return None
    if new_faces >= settings.recluster_every:
        return f"{new_faces} new faces (recluster_every {settings.recluster_every})"
    growth = settings.recluster_growth
    if growth > 0 and new_faces >= growth * faces_before:
        return (f"the index grew by {new_faces} faces, {new_faces / max(faces_before, 1):.0%} "
                f"of {faces_before} (recluster_growth {growth:.0%})")
    return None


def recluster(store: Store, settings: Settings, algorithm: str | None = None,
              params: ClusterParams | None = None) -> ReclusterReport:
    """Cluster every face in the index and write stable cluster ids back."""
    start = time.perf_counter()
    algorithm = algorithm or "hdbscan"
    params = params or default_params(store.model.name)
    snap = store.cluster_snapshot()
    store.release()  # let a watch daemon write while we compute
    n = len(snap.face_ids)
    log.info("reclustering %d faces with %s", n, algorithm)
    result = cluster(snap.vectors, algorithm, params, groups=snap.image_ids) if n else None
    labels = result.labels if result is not None else np.zeros(0, dtype=np.int64)
    row_of = {int(f): i for i, f in enumerate(snap.face_ids.tolist())}
    pinned = {row_of[f]: c for f, c in snap.pins.items() if f in row_of}
    rejected = {(row_of[f], c) for f, c in snap.rejected if f in row_of}
    final, report = reconcile(labels, snap.previous, snap.named, pinned, rejected,
                              snap.next_cluster_id, vectors=snap.vectors,
                              groups=snap.image_ids)
    rows, distances = _cluster_rows(snap.face_ids, snap.vectors, final)
    store.apply_clustering(snap.face_ids, final, distances, f"recluster ({algorithm})", rows,
                           keep=snap.named, fresh_from=snap.next_cluster_id)
    out = ReclusterReport(
        algorithm=algorithm, params=result.params if result else {}, faces=n,
        clusters=len(rows), outliers=int((final < 0).sum()), kept=len(report.kept),
        new=len(report.new), dissolved=len(report.dissolved),
        named_kept=len(snap.named), faces_moved=int((final != snap.previous).sum()),
        seconds=round(time.perf_counter() - start, 3))
    if result is not None:
        _save_last_run(store, settings, algorithm, result.params, result.condensed_tree,
                       {k: v for k, v in out.to_json().items() if k != "params"})
    log.info("recluster: %d clusters (%d kept, %d new, %d dissolved), %d outliers, "
             "%d faces moved", out.clusters, out.kept, out.new, out.dissolved, out.outliers,
             out.faces_moved)
    return out


def _cluster_rows(face_ids: np.ndarray, vectors: np.ndarray, final: np.ndarray
                  ) -> tuple[list[ClusterRow], np.ndarray]:
    """Size, centroid and medoid per cluster, and each face's distance to its centroid."""
    distances = np.full(len(face_ids), np.nan)
    rows = []
    order = np.argsort(final, kind="stable")
    ids_sorted = final[order]
    starts = np.searchsorted(ids_sorted, np.unique(ids_sorted[ids_sorted >= 0]))
    bounds = list(starts) + [len(order)]
    for i, begin in enumerate(starts):
        members = order[begin:bounds[i + 1]]
        cid = int(final[members[0]])
        vecs = vectors[members]
        centroid = vecs.mean(axis=0)
        unit = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        d = np.sqrt(np.clip(2.0 - 2.0 * vecs @ unit, 0.0, None))
        distances[members] = d
        if len(members) <= MEDOID_EXACT_MAX:
            pair = np.sqrt(np.clip(2.0 - 2.0 * vecs @ vecs.T, 0.0, None))
            medoid = members[int(np.argmin(pair.sum(axis=1)))]
        else:
            medoid = members[int(np.argmin(d))]
        rows.append(ClusterRow(cluster_id=cid, size=len(members),
                               centroid=centroid.astype(np.float32),
                               medoid_face_id=int(face_ids[medoid])))
    return rows, distances


def _save_last_run(store: Store, settings: Settings, algorithm: str, params: dict[str, Any],
                   condensed_tree: np.ndarray | None,
                   changes: dict[str, Any] | None = None) -> None:
    """Remember how the last recluster ran (export plots its condensed tree)."""
    tree_path = settings.home / "condensed_tree.npy"
    if condensed_tree is not None:
        fd, tmp = tempfile.mkstemp(prefix=".tree.", suffix=".npy", dir=settings.home)
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, condensed_tree)
        os.replace(tmp, tree_path)
    else:
        tree_path.unlink(missing_ok=True)
    store.set_meta("last_recluster", json.dumps(
        {"algorithm": algorithm, "params": params, "at": time.time(),
         "condensed_tree": condensed_tree is not None, **(changes or {})}, default=str))
