"""New people online: unassigned faces found a person without waiting for a recluster.

After a batch's faces were assigned to known people (indexer.assign), each new face left
over looks at the unassigned faces among its nearest stored faces (and the batch's other
new ones): those within `ClusterParams.online_link_distance` (by default
the model's split_distance) and from other photos are taken nearest first while they stay
within that distance of every face taken so far (complete linkage, so a chain of look-alikes cannot
join). A group of at least `min_cluster_size` faces from as many photos becomes a new
person. The next batches then join faces to it by centroid, as to any person, and the
periodic recluster reconciles it (its id is kept when the recluster finds the same person).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import duckdb
import numpy as np

from .clustering import ClusterParams
from .store import Store, distance_to_unit

log = logging.getLogger(__name__)


def group_around(seed: int, d_seed: np.ndarray, pair: np.ndarray, photos: np.ndarray,
                 free: np.ndarray, limit: float) -> list[int]:
    """Pool rows that found a person with pool row `seed`: nearest first, each within `limit`
    of every row taken so far, one face per photo."""
    group = [seed]
    taken_photos = {int(photos[seed])}
    for j in np.argsort(d_seed, kind="stable").tolist():
        if d_seed[j] > limit:
            break
        if j == seed or not free[j] or int(photos[j]) in taken_photos:
            continue
        if (pair[j, group] <= limit).all():
            group.append(j)
            taken_photos.add(int(photos[j]))
    return group


def link_distance(params: ClusterParams) -> float:
    """How close every two faces of a person founded online must be."""
    if params.online_link_distance is not None:
        return params.online_link_distance
    return params.split_distance if params.split_distance is not None else params.dbscan_eps


NEIGHBOURS = 64
"""Stored faces looked at around each new face (FAISS), of which the unassigned ones count."""


def found_people(store: Store, con: duckdb.DuckDBPyConnection, seeds: Sequence[int],
                 params: ClusterParams) -> list[tuple[int, np.ndarray, int]]:
    """Found new people around the unassigned faces `seeds`, inside the batch's transaction.

    Returns (cluster id, sum of member vectors, size) per person founded."""
    if not seeds:
        return []
    seed_ids, _, seed_vecs = store.link_candidates(seeds)
    if len(seed_ids) == 0:
        return []
    near = store.nearest_face_ids(seed_vecs, NEIGHBOURS)  # committed faces only
    ids, photos, vectors = store.link_candidates(
        np.union1d(seed_ids, near[near >= 0]).tolist())
    if len(ids) < max(2, params.min_cluster_size):
        return []
    seed_rows = np.searchsorted(ids, seed_ids).tolist()
    limit = link_distance(params)
    x = vectors.astype(np.float64)
    d = np.sqrt(np.clip(2.0 - 2.0 * x[seed_rows] @ x.T, 0.0, None))  # seeds x candidates
    free = np.ones(len(ids), dtype=bool)
    founded: list[tuple[int, np.ndarray, int]] = []
    for s, row in enumerate(seed_rows):
        if not free[row]:
            continue
        near_rows = np.nonzero((d[s] <= limit) & free)[0]
        if len(near_rows) < params.min_cluster_size:
            continue
        cand = x[near_rows]
        pair = np.sqrt(np.clip(2.0 - 2.0 * cand @ cand.T, 0.0, None))
        local = group_around(int(np.searchsorted(near_rows, row)), d[s][near_rows], pair,
                             photos[near_rows], free[near_rows], limit)
        if len(local) < params.min_cluster_size:
            continue
        members = near_rows[local]
        free[members] = False
        sub = x[members]
        centroid = sub.mean(axis=0)
        unit = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        dist = distance_to_unit(sub, unit)
        within = np.sqrt(np.clip(2.0 - 2.0 * sub @ sub.T, 0.0, None))
        medoid = int(ids[members[int(np.argmin(within.sum(axis=1)))]])
        reason = (f"online: founded a new person with {len(members)} faces of "
                  f"{len(members)} photos, each two within {limit:.2f}")
        cid = store.found_cluster(con, ids[members].tolist(), medoid, dist.tolist(), reason)
        founded.append((cid, sub.sum(axis=0), len(members)))
        log.info("founded person %d from %d unassigned faces", cid, len(members))
    return founded
