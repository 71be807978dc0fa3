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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .clustering import ClusterParams, ReconcileReport, cluster, reconcile
from .models import CLUSTER_DISTANCES, distance_scale
from .settings import Settings
from .store import ClusterRow, ClusterSnapshot, Store, distance_to_unit

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
    faces_added_meanwhile: int = 0
    faces_deleted_meanwhile: int = 0

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
              params: ClusterParams | None = None, *,
              after_snapshot: Callable[[], None] | None = None) -> ReclusterReport:
    """Cluster every face in the index and write stable cluster ids back.

    Reads a snapshot, releases the catalog, clusters (the long part: a watch daemon keeps
    indexing meanwhile), then writes in one transaction that first re-reads the catalog: faces
    deleted meanwhile stay deleted, corrections made meanwhile (names, moves, rejections,
    merges, undo) are reconciled again from the state they left, and faces added meanwhile
    that lost their online person are assigned against the new centroids. `after_snapshot`
    is called once the catalog is released (tests slow the recluster down with it).
    """
    start = time.perf_counter()
    algorithm = algorithm or "hdbscan"
    params = params or default_params(store.model.name)
    snap = store.cluster_snapshot()
    store.release()  # let a watch daemon write while we compute
    if after_snapshot is not None:
        after_snapshot()
    n = len(snap.face_ids)
    log.info("reclustering %d faces with %s", n, algorithm)
    result = cluster(snap.vectors, algorithm, params, groups=snap.image_ids) if n else None
    labels = result.labels if result is not None else np.zeros(0, dtype=np.int64)
    t_cluster = time.perf_counter()
    plan = _plan(snap, labels, snap.previous, snap.named, snap.pins, snap.rejected,
                 snap.next_cluster_id, np.ones(n, dtype=bool))
    with store.transaction() as con:
        state = store.cluster_state(con)
        row = np.searchsorted(state.face_ids, snap.face_ids)
        row = np.minimum(row, max(len(state.face_ids) - 1, 0))
        alive = (state.face_ids[row] == snap.face_ids) if len(state.face_ids) else \
            np.zeros(n, dtype=bool)
        if state.generation != snap.generation or not alive.all():
            log.info("recluster: %d face(s) deleted and corrections %s since the snapshot; "
                     "reconciling again", int((~alive).sum()),
                     "made" if state.generation != snap.generation else "unchanged")
            previous = np.where(alive, state.cluster_ids[row], -1)
            plan = _plan(snap, labels, previous, state.named, state.pins, state.rejected,
                         max(state.next_cluster_id, snap.next_cluster_id), alive)
        final, rep, rows, distances, previous = plan
        ids = snap.face_ids[alive]
        # the write needs no vectors: let them go before DuckDB's share of memory is taken
        # (2 GB at 1M 512-d faces, beside the write's own peak)
        snap = replace(snap, vectors=np.empty((0, snap.vectors.shape[1]), np.float32))
        store.write_clustering(con, ids, final, distances, f"recluster ({algorithm})", rows,
                               keep=state.named | snap.named,
                               fresh_from=snap.next_cluster_id)
        in_snapshot = np.isin(state.face_ids, snap.face_ids, assume_unique=True)
        meanwhile = state.face_ids[~in_snapshot].tolist()
        orphans = store.unassigned_among(con, meanwhile)
        if orphans:  # added meanwhile: join the new people (or found new ones) online
            from .assign import Assigner

            _, vecs = store.embeddings(orphans)
            Assigner(store, settings, found_people=False).on_faces_added(con, orphans, vecs)
    t_write = time.perf_counter()
    out = ReclusterReport(
        algorithm=algorithm, params=result.params if result else {}, faces=len(ids),
        clusters=len(rows), outliers=int((final < 0).sum()), kept=len(rep.kept),
        new=len(rep.new), dissolved=len(rep.dissolved),
        named_kept=len(state.named), faces_moved=int((final != previous).sum()),
        seconds=round(time.perf_counter() - start, 3), faces_added_meanwhile=len(meanwhile),
        faces_deleted_meanwhile=int((~alive).sum()))
    if result is not None:
        _save_last_run(store, settings, algorithm, result.params, result.condensed_tree,
                       {k: v for k, v in out.to_json().items() if k != "params"})
    log.info("recluster: %d clusters (%d kept, %d new, %d dissolved), %d outliers, "
             "%d faces moved; cluster %.1fs, reconcile and write %.1fs", out.clusters,
             out.kept, out.new, out.dissolved, out.outliers, out.faces_moved,
             t_cluster - start, t_write - t_cluster)
    return out


_Plan = tuple[np.ndarray, ReconcileReport, list[ClusterRow], np.ndarray, np.ndarray]


def _plan(snap: ClusterSnapshot, labels: np.ndarray, previous: np.ndarray, named: set[int],
          pins: dict[int, int], rejections: set[tuple[int, int]], next_id: int,
          alive: np.ndarray) -> _Plan:
    """Reconcile the clustering's labels of the faces still alive with the given corrections:
    final ids, the report, cluster rows, distances to centroids, and their previous ids."""
    face_ids = snap.face_ids[alive]
    vectors = snap.vectors if alive.all() else snap.vectors[alive]
    prev = previous[alive]
    row_of = {int(f): i for i, f in enumerate(face_ids.tolist())}
    pinned = {row_of[f]: c for f, c in pins.items() if f in row_of}
    rejected = {(row_of[f], c) for f, c in rejections if f in row_of}
    final, report = reconcile(labels[alive], prev, named, pinned, rejected, next_id,
                              vectors=vectors, groups=snap.image_ids[alive])
    rows, distances = _cluster_rows(face_ids, vectors, final)
    return final, report, rows, distances, prev


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
        d = distance_to_unit(vecs, unit)
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
