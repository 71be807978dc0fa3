"""Online assignment: a new face joins the nearest known identity when it is close enough.

Each cluster keeps a centroid (the mean of its members' vectors). A new face is compared with
every centroid through a FAISS index; if the nearest allowed one is within the model's
threshold, the face joins that cluster and the centroid moves to include it. Otherwise the face
stays unassigned until the next recluster, or until it founds a new person with other
unassigned faces (indexer.online, after each batch).

Cannot-link: a cluster that already holds a face of the same photo is passed over for the next
nearest one (two faces of one photo are two people). Faces of one batch are placed nearest
first, so where two faces of a photo want one person, the nearer one gets it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .models import ASSIGN_THRESHOLD, distance_scale
from .settings import Settings
from .store import Store, distance_from_ip
from .store.engine import duckdb
from .types import Matrix

log = logging.getLogger(__name__)

# Distance from a face to its identity's centroid, on L2-normalised vectors, for dlib:
# measured on ../shared/faces LFW with scripts/measure_assign_threshold.py (306 identities with
# >= 4 faces, each face held out in turn): at 0.30, 95% of known faces join the right person,
# 0.1% a wrong one, the rest wait for the recluster, and 1% of strangers (whose identity has no
# cluster) are wrongly assigned; at 0.34 that last figure is already 9%. Other models scale it
# by their published same-person distance (indexer.models.SAME_PERSON_DISTANCE): facenet 0.74.
DLIB_THRESHOLD = 0.30
CANDIDATES = 8
"""How many nearest centroids are considered, so a rejected cluster can be passed over."""


def threshold_for(model_name: str, settings: Settings) -> float:
    if settings.assign_threshold is not None:
        return settings.assign_threshold
    if model_name in ASSIGN_THRESHOLD:  # measured for this model
        return ASSIGN_THRESHOLD[model_name]
    return round(DLIB_THRESHOLD * distance_scale(model_name), 2)


class Assigner:
    """Keeps an in-memory FAISS index of centroids in step with the catalog's clusters."""

    def __init__(self, store: Store, settings: Settings, *, found_people: bool = True) -> None:
        from .recluster import default_params

        self.store = store
        self.threshold = threshold_for(store.model.name, settings)
        self.found_people = found_people
        self.params = default_params(store.model.name)
        self._ids = np.zeros(0, dtype=np.int64)
        self._sums = np.zeros((0, store.model.dim), dtype=np.float64)
        self._sizes = np.zeros(0, dtype=np.int64)
        self._index: Any = None
        self.reload()

    def reload(self) -> None:
        """Read centroids again (after a recluster or a user's correction)."""
        ids, centroids, sizes = self.store.centroids()
        self._ids = ids
        self._sizes = sizes
        self._sums = centroids.astype(np.float64) * sizes[:, None]
        self._rebuild_index()

    def _rebuild_index(self) -> None:
        import faiss

        index = faiss.IndexFlatIP(self.store.model.dim)
        if len(self._ids):
            index.add(_unit(self._sums))
        self._index = index

    def on_faces_added(self, con: duckdb.DuckDBPyConnection, face_ids: list[int],
                       vectors: Matrix) -> None:
        """Pipeline hook: assign these new faces inside the batch's transaction, then let the
        ones left over found new people with other unassigned faces."""
        rows = self.assign(face_ids, vectors)
        self.store.set_assignments(con, rows)
        for cluster_id in {c for _, c, _, _ in rows if c is not None}:
            i = int(np.searchsorted(self._ids, cluster_id))
            self.store.set_centroid(con, cluster_id, (self._sums[i] / self._sizes[i]),
                                    int(self._sizes[i]))
        if self.found_people:
            from .online import found_people

            waiting = [f for f, c, _, _ in rows if c is None]
            for cluster_id, sums, size in found_people(self.store, con, waiting, self.params):
                self.add_cluster(cluster_id, sums, size)

    def add_cluster(self, cluster_id: int, sums: np.ndarray, size: int) -> None:
        """A cluster made outside a recluster (a person founded online) joins the index."""
        i = int(np.searchsorted(self._ids, cluster_id))
        self._ids = np.insert(self._ids, i, cluster_id)
        self._sums = np.insert(self._sums, i, np.asarray(sums, dtype=np.float64), axis=0)
        self._sizes = np.insert(self._sizes, i, size)
        self._rebuild_index()

    def assign(self, face_ids: list[int], vectors: Matrix
               ) -> list[tuple[int, int | None, float | None, str]]:
        """(face_id, cluster_id or None, distance, reason) for each face; updates centroids."""
        if len(self._ids) == 0:
            return [(f, None, None, "no clusters yet; waits for recluster") for f in face_ids]
        vecs = np.asarray(vectors, dtype=np.float32)
        rejected = self.store.rejections(face_ids)
        photo_of, held = self.store.photo_clusters(face_ids)
        out: dict[int, tuple[int, int | None, float | None, str]] = {}
        changed = False
        k = min(CANDIDATES, len(self._ids))
        nearest, _ = self._index.search(vecs, 1)
        for j in np.argsort(-nearest[:, 0], kind="stable").tolist():
            face_id, vec = face_ids[j], vecs[j]
            if changed:
                self._rebuild_index()
                changed = False
            taken = held.setdefault(photo_of.get(face_id, -1), set())
            sims, idx = self._index.search(vec[None, :], k)
            choice = None
            passed_over = 0
            for sim, i in zip(distance_from_ip(sims[0]), idx[0], strict=True):
                if i < 0:
                    continue
                cluster_id = int(self._ids[i])
                if (face_id, cluster_id) in rejected:
                    continue
                if cluster_id in taken:
                    passed_over += 1
                    continue
                choice = (int(i), cluster_id, float(sim))
                break
            if choice is None:
                out[face_id] = (face_id, None, None, "every near cluster was rejected for it "
                                "or holds another face of its photo")
                continue
            i, cluster_id, dist = choice
            note = (f" (next-best: {passed_over} nearer person(s) hold another face of its "
                    "photo)" if passed_over else "")
            if dist <= self.threshold:
                self._sums[i] += vec
                self._sizes[i] += 1
                taken.add(cluster_id)
                changed = True
                out[face_id] = (face_id, cluster_id, dist,
                                f"online: nearest centroid {dist:.3f} <= {self.threshold:.2f}"
                                + note)
            else:
                out[face_id] = (face_id, None, dist,
                                f"online: nearest centroid {dist:.3f} > {self.threshold:.2f} "
                                f"(cluster {cluster_id}){note}; waits for recluster")
        return [out[f] for f in face_ids]


def _unit(sums: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)
