"""Clusters, people and the user's corrections."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, NotFound
from .base import as_table, bump_generation
from .engine import duckdb
from .faces import id_filter
from .rows import PersonRow

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np

    from .bulkrows import ClusterRow, ClusterSnapshot, ClusterState

log = logging.getLogger(__name__)


class PeopleMixin:
    # ------------------------------------------------------------------ clusters and people
    def cluster_names(self) -> dict[int | None, str]:
        with self._read() as con:
            rows = con.execute(
                "SELECT cluster_id, name FROM people WHERE cluster_id IS NOT NULL").fetchall()
        return {int(c): str(n) for c, n in rows}

    def centroids_without(self, face_ids: Sequence[int]) -> dict[int, np.ndarray | None]:
        """For each cluster holding one of `face_ids`: the mean vector of its other members
        (None when it has no other), as its centroid would be without those faces."""
        import numpy as np

        where, params = id_filter("face_id", face_ids)
        with self._read() as con:
            result = con.execute(
                "SELECT c.cluster_id, f.embedding FROM (SELECT DISTINCT cluster_id FROM faces "
                f"WHERE {where} AND cluster_id >= 0) c LEFT JOIN faces f "
                f"ON f.cluster_id = c.cluster_id AND NOT (f.{where}) ORDER BY c.cluster_id",
                params + params).fetchall()
        sums: dict[int, list[np.ndarray]] = {}
        for cid, blob in result:
            members = sums.setdefault(int(cid), [])
            if blob is not None:
                members.append(np.frombuffer(blob, dtype=np.float32))
        return {cid: np.mean(m, axis=0).astype(np.float32) if m else None
                for cid, m in sums.items()}

    def rejections(self, face_ids: Sequence[int] | None = None) -> set[tuple[int, int]]:
        """(face_id, cluster_id) pairs a user said are not the same person."""
        where, params = ("TRUE", []) if face_ids is None else id_filter("face_id", face_ids)
        with self._read() as con:
            return {(int(f), int(c)) for f, c in con.execute(
                f"SELECT face_id, cluster_id FROM face_rejections WHERE {where}",
                params).fetchall()}

    def set_assignments(self, con: duckdb.DuckDBPyConnection,
                        rows: Sequence[tuple[int, int | None, float | None, str]]) -> None:
        """Record (face_id, cluster_id or None, distance, reason) for faces."""
        if rows:
            con.executemany(
                "UPDATE faces SET cluster_id = ?, assign_distance = ?, assign_reason = ? "
                "WHERE face_id = ?", [[c, d, r, f] for f, c, d, r in rows])

    def set_centroid(self, con: duckdb.DuckDBPyConnection, cluster_id: int,
                     centroid: np.ndarray, size: int) -> None:
        import numpy as np

        con.execute(
            "UPDATE clusters SET centroid = ?, size = ?, updated_at = now() WHERE cluster_id = ?",
            [np.asarray(centroid, dtype=np.float32).tobytes(), int(size), int(cluster_id)])

    # -- cannot-link within a photo, and people founded online
    def photo_clusters(self, face_ids: Sequence[int]
                       ) -> tuple[dict[int, int], dict[int, set[int]]]:
        """Each face's photo, and the clusters already holding a face of each such photo."""
        wanted = [int(i) for i in face_ids]
        with self._read() as con:
            rows = con.execute(
                "SELECT face_id, image_id, cluster_id FROM faces WHERE image_id IN "
                "(SELECT image_id FROM faces WHERE face_id IN (SELECT unnest(?)))",
                [wanted]).fetchall()
        asked = set(wanted)
        photo = {int(f): int(i) for f, i, _ in rows if int(f) in asked}
        held: dict[int, set[int]] = {}
        for _, i, c in rows:
            if c is not None:
                held.setdefault(int(i), set()).add(int(c))
        return photo, held

    def link_candidates(self, face_ids: Sequence[int]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face ids, photo ids and vectors of those of `face_ids` in no cluster, by face id."""
        import numpy as np

        with self._read() as con:
            result = con.execute(
                "SELECT face_id, image_id, embedding FROM faces WHERE cluster_id IS NULL "
                "AND face_id IN (SELECT unnest(?)) ORDER BY face_id",
                [[int(i) for i in face_ids]]).fetchnumpy()
        ids = np.asarray(result["face_id"], dtype=np.int64)
        photos = np.asarray(result["image_id"], dtype=np.int64)
        if len(ids) == 0:
            return ids, photos, np.zeros((0, self.model.dim), dtype=np.float32)
        vectors = np.frombuffer(b"".join(result["embedding"]), dtype=np.float32)
        return ids, photos, vectors.reshape(len(ids), self.model.dim).copy()

    def found_cluster(self, con: duckdb.DuckDBPyConnection, face_ids: Sequence[int],
                      medoid_face_id: int, distances: Sequence[float], reason: str) -> int:
        """A new cluster of these unassigned faces (a person found online); returns its id."""
        cid = self._next_id(con, "clusters", "cluster_id")
        con.execute("INSERT INTO clusters (cluster_id, medoid_face_id) VALUES (?, ?)",
                    [cid, int(medoid_face_id)])
        con.executemany(
            "UPDATE faces SET cluster_id = ?, assign_distance = ?, assign_reason = ? "
            "WHERE face_id = ? AND cluster_id IS NULL",
            [[cid, float(d), reason, int(f)] for f, d in zip(face_ids, distances, strict=True)])
        self._refresh_cluster(con, cid)
        return cid

    # -- reclustering: a snapshot in, final ids out
    def cluster_snapshot(self) -> ClusterSnapshot:
        """Everything a recluster reads: ids, previous clusters, photos and corrections in one
        short read of the catalog, the vectors mostly from the search index's files
        (snapshot.py says why and how)."""
        from .snapshot import read_cluster_snapshot

        return read_cluster_snapshot(self)  # type: ignore[arg-type]

    def cluster_state(self, con: duckdb.DuckDBPyConnection) -> ClusterState:
        """Inside a recluster's write transaction: the faces and corrections as they are now
        (faces deleted, added or corrected since its snapshot show here)."""
        return self._cluster_corrections(con, with_faces=True)

    def _cluster_corrections(self, con: duckdb.DuckDBPyConnection, *,
                             with_faces: bool = False) -> ClusterState:
        import numpy as np

        from .bulkrows import ClusterState

        faces = np.zeros(0, dtype=np.int64)
        cids = np.zeros(0, dtype=np.int64)
        if with_faces:
            cur = con.execute("SELECT face_id, coalesce(cluster_id, -1) AS c FROM faces "
                              "ORDER BY face_id").fetchnumpy()
            faces = np.asarray(cur["face_id"], dtype=np.int64)
            cids = np.asarray(cur["c"], dtype=np.int64)
        named = {int(r[0]) for r in con.execute(
            "SELECT cluster_id FROM people WHERE cluster_id IS NOT NULL").fetchall()}
        pins = {int(f): int(c) for f, c in con.execute(
            "SELECT face_id, cluster_id FROM face_pins").fetchall()}
        rejected = {(int(f), int(c)) for f, c in con.execute(
            "SELECT face_id, cluster_id FROM face_rejections").fetchall()}
        row = con.execute("SELECT coalesce(max(cluster_id), 0) + 1 FROM clusters").fetchone()
        gen = con.execute(
            "SELECT value FROM meta WHERE key = 'clusters_generation'").fetchone()
        return ClusterState(face_ids=faces, cluster_ids=cids, named=named, pins=pins,
                            rejected=rejected, next_cluster_id=int(row[0]) if row else 1,
                            generation=None if gen is None else str(gen[0]))

    def apply_clustering(self, face_ids: np.ndarray, cluster_ids: np.ndarray,
                         distances: np.ndarray, reason: str,
                         clusters: Sequence[ClusterRow], keep: set[int],
                         fresh_from: int | None = None) -> None:
        """Write a clustering in one transaction (see write_clustering)."""
        with self.transaction() as con:
            self.write_clustering(con, face_ids, cluster_ids, distances, reason, clusters,
                                  keep, fresh_from)

    def write_clustering(self, con: duckdb.DuckDBPyConnection, face_ids: np.ndarray,
                         cluster_ids: np.ndarray, distances: np.ndarray, reason: str,
                         clusters: Sequence[ClusterRow], keep: set[int],
                         fresh_from: int | None = None) -> None:
        """Write a recluster's result inside the caller's transaction.

        Faces not in `face_ids` (added meanwhile) keep their assignment if their cluster still
        exists and is older than the snapshot (id below `fresh_from`: a person founded online
        meanwhile may share its id with one of the recluster's new ones). Cluster rows not in
        `clusters` are dropped unless in `keep` (named ones). Faces in `face_ids` that were
        deleted meanwhile stay deleted (rows are only updated, never inserted).
        """
        import numpy as np

        assigned = np.where(cluster_ids >= 0, cluster_ids, -1).astype(np.int64)
        with as_table(con, "clustered_faces", f=np.asarray(face_ids, dtype=np.int64),
                      c=assigned, d=np.asarray(distances, dtype=np.float64)):
            if fresh_from is not None:
                con.execute(
                    "UPDATE faces SET cluster_id = NULL, assign_distance = NULL, "
                    "assign_reason = 'its online person was replaced by a recluster' "
                    "WHERE cluster_id >= ? AND face_id NOT IN (SELECT f FROM clustered_faces)",
                    [int(fresh_from)])
            con.execute(
                "UPDATE faces SET cluster_id = CASE WHEN m.c < 0 THEN NULL ELSE m.c END, "
                "assign_distance = CASE WHEN m.c < 0 THEN NULL ELSE m.d END, "
                "assign_reason = ? FROM clustered_faces m WHERE faces.face_id = m.f", [reason])
        live = np.asarray([c.cluster_id for c in clusters], dtype=np.int64)
        with as_table(con, "live_clusters", c=live), \
                as_table(con, "kept_clusters", c=np.asarray(sorted(keep), dtype=np.int64)):
            con.execute("DELETE FROM clusters WHERE cluster_id NOT IN "
                        "(SELECT c FROM live_clusters) AND cluster_id NOT IN "
                        "(SELECT c FROM kept_clusters)")
            con.execute("DELETE FROM clusters WHERE cluster_id IN (SELECT c FROM live_clusters)")
        if clusters:  # one bulk insert (executemany costs ~0.1 ms a row)
            centroids = np.empty(len(clusters), dtype=object)
            centroids[:] = [np.asarray(c.centroid, np.float32).tobytes() for c in clusters]
            with as_table(con, "new_clusters", c=live,
                          s=np.asarray([c.size for c in clusters], dtype=np.int64),
                          v=centroids,
                          m=np.asarray([c.medoid_face_id for c in clusters], dtype=np.int64)):
                con.execute("INSERT INTO clusters (cluster_id, size, centroid, medoid_face_id) "
                            "SELECT c, s, v, m FROM new_clusters")
        con.execute(
            "UPDATE faces SET cluster_id = NULL, assign_distance = NULL, "
            "assign_reason = 'its cluster was dissolved by a recluster' "
            "WHERE cluster_id IS NOT NULL AND cluster_id NOT IN "
            "(SELECT cluster_id FROM clusters)")
        con.execute(
            "UPDATE clusters SET size = (SELECT count(*) FROM faces f "
            "WHERE f.cluster_id = clusters.cluster_id)")
        bump_generation(con)

    def unassigned_among(self, con: duckdb.DuckDBPyConnection,
                         face_ids: Sequence[int]) -> list[int]:
        """Those of `face_ids` that exist and have no cluster (inside a transaction)."""
        if not face_ids:
            return []
        where, params = id_filter("face_id", face_ids)
        return [int(r[0]) for r in con.execute(
            f"SELECT face_id FROM faces WHERE cluster_id IS NULL AND {where} ORDER BY face_id",
            params).fetchall()]

    def people(self, limit: int | None = None) -> list[PersonRow]:
        """Every cluster (named first, then by size; the first `limit`) with its size, name
        (if any) and representative face."""
        return self.people_top(limit)[0]

    def people_top(self, limit: int | None = None) -> tuple[list[PersonRow], int]:
        """The first `limit` clusters as `people()` orders them, and how many there are."""
        with self._read() as con:
            rows = con.execute(
                "WITH top AS (SELECT c.cluster_id, p.name, c.size, c.medoid_face_id, "
                "count(*) OVER () AS total FROM clusters c "
                "LEFT JOIN people p ON p.cluster_id = c.cluster_id "
                "WHERE c.size > 0 OR p.name IS NOT NULL "
                "ORDER BY (p.name IS NULL), c.size DESC, c.cluster_id LIMIT ?) "
                "SELECT top.cluster_id, top.name, top.size, top.medoid_face_id, i.path, "
                "f.x1, f.y1, f.x2, f.y2, top.total "
                "FROM top LEFT JOIN faces f ON f.face_id = top.medoid_face_id "
                "LEFT JOIN images i ON i.image_id = f.image_id "
                "ORDER BY (top.name IS NULL), top.size DESC, top.cluster_id",
                [limit]).fetchall()
        total = int(rows[0][9]) if rows else 0
        return [_person_row(r) for r in rows], total

    def people_rows(self, cluster_ids: Sequence[int]) -> list[PersonRow]:
        """These clusters' rows as `people()` gives them (those that exist), read by id: the
        medoids' faces and photos are found through the row groups that hold them."""
        where, params = id_filter("c.cluster_id", cluster_ids)
        with self._read() as con:
            rows = con.execute(
                "SELECT c.cluster_id, p.name, c.size, c.medoid_face_id, i.path, "
                "f.x1, f.y1, f.x2, f.y2 "
                "FROM clusters c LEFT JOIN people p ON p.cluster_id = c.cluster_id "
                "LEFT JOIN faces f ON f.face_id = c.medoid_face_id "
                f"LEFT JOIN images i ON i.image_id = f.image_id WHERE {where} "
                "ORDER BY c.cluster_id", params).fetchall()
        return [_person_row(r) for r in rows]

    def people_count(self) -> int:
        """How many people (named clusters) there are."""
        with self._read() as con:
            row = con.execute("SELECT count(*) FROM people").fetchone()
        return int(row[0]) if row else 0

    def cluster_id_for(self, ref: str) -> int:
        """A cluster named by its id or by a person's name."""
        return self.cluster_and_name(ref)[0]

    def cluster_and_name(self, ref: str) -> tuple[int, str | None]:
        """A cluster named by its id or by a person's name, and its person's name (None for
        a cluster no one named), in one statement."""
        with self._read() as con:
            if ref.lstrip("-").isdigit():
                row = con.execute("SELECT c.cluster_id, p.name FROM clusters c LEFT JOIN "
                                  "people p ON p.cluster_id = c.cluster_id "
                                  "WHERE c.cluster_id = ?", [int(ref)]).fetchone()
            else:
                row = con.execute("SELECT cluster_id, name FROM people WHERE name = ?",
                                  [ref]).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"no cluster or person {ref!r} in {self.settings.home}; "
                           "see `faceidx people`")
        return int(row[0]), None if row[1] is None else str(row[1])

    def require_faces(self, face_ids: Sequence[int]) -> None:
        with self._read() as con:
            found = {int(r[0]) for r in con.execute(
                "SELECT face_id FROM faces WHERE face_id IN (SELECT unnest(?))",
                [[int(f) for f in face_ids]]).fetchall()}
        missing = [int(f) for f in face_ids if int(f) not in found]
        if missing:
            raise NotFound(f"no face {', '.join(map(str, missing))} in {self.settings.home}; "
                           "see `faceidx query` or the web app for face ids")

    def require_face(self, face_id: int) -> None:
        self.require_faces([face_id])

    def cluster_summary(self, cluster_id: int) -> PersonRow:
        """One cluster's name, size and representative face."""
        with self._read() as con:
            row = con.execute(
                "SELECT c.cluster_id, p.name, c.size, c.medoid_face_id, i.path, "
                "f.x1, f.y1, f.x2, f.y2 "
                "FROM clusters c LEFT JOIN people p ON p.cluster_id = c.cluster_id "
                "LEFT JOIN faces f ON f.face_id = c.medoid_face_id "
                "LEFT JOIN images i ON i.image_id = f.image_id WHERE c.cluster_id = ?",
                [cluster_id]).fetchone()
        if row is None:
            raise NotFound(f"no cluster {cluster_id} in {self.settings.home}; "
                           "see `faceidx people`")
        return _person_row(row)

    def same_photo_faces(self, a: int, b: int) -> list[tuple[int, int, str]]:
        """(face in a, face in b, photo) for photos with a face in each cluster: a merge of
        the two would put two faces of one photo in one person."""
        with self._read() as con:
            rows = con.execute(
                "SELECT fa.face_id, fb.face_id, i.path FROM faces fa "
                "JOIN faces fb ON fb.image_id = fa.image_id AND fb.cluster_id = ? "
                "JOIN images i ON i.image_id = fa.image_id "
                "WHERE fa.cluster_id = ? ORDER BY fa.face_id, fb.face_id", [b, a]).fetchall()
        return [(int(x), int(y), str(p)) for x, y, p in rows]

    # -- corrections: each runs inside HistoryMixin.record_correction's transaction
    def name_cluster(self, con: duckdb.DuckDBPyConnection, cluster_id: int, name: str,
                     before: dict[str, Any]) -> int:
        """`before`: the facts record_correction read (HistoryMixin._facts), which hold every
        member of the cluster with its pin."""
        found = con.execute("SELECT person_id, cluster_id, name = $n FROM people "
                            "WHERE name = $n OR cluster_id = $c", {"n": name, "c": cluster_id}
                            ).fetchall()
        for _, other, same_name in found:
            if same_name and other != cluster_id:
                raise Conflict(f"{name!r} already names cluster {other}; "
                               f"use `faceidx merge {other} {cluster_id}` to join them")
        row = next((r for r in found if r[1] == cluster_id), None)
        if row is not None:
            con.execute("UPDATE people SET name = ? WHERE person_id = ?", [name, row[0]])
        else:
            pid = self._next_id(con, "people", "person_id")
            con.execute("INSERT INTO people (person_id, name, cluster_id) VALUES (?, ?, ?)",
                        [pid, name, cluster_id])
        # A named cluster's members are the user's: pin them so reclusters keep them (those
        # pinned to it already, every one when it is renamed, are left as they are). They
        # are those of the facts read before, in this transaction: the faces are not scanned
        # for them again.
        unpinned = [int(f) for f, (cid, _, _, pin, _) in before["faces"].items()
                    if cid == cluster_id and pin != cluster_id]
        if unpinned:
            con.execute("INSERT OR REPLACE INTO face_pins (face_id, cluster_id) "
                        "SELECT unnest(?::BIGINT[]), ?", [unpinned, cluster_id])
        return cluster_id

    def merge_clusters(self, con: duckdb.DuckDBPyConnection, into: int, other: int) -> int:
        """Move every face of `other` into `into` (a name of `other` is dropped when `into`
        has one, else it moves along)."""
        names = dict(con.execute("SELECT cluster_id, name FROM people "
                                 "WHERE cluster_id IN (?, ?)", [into, other]).fetchall())
        if other in names:
            if into in names:
                con.execute("DELETE FROM people WHERE cluster_id = ?", [other])
            else:
                con.execute("UPDATE people SET cluster_id = ? WHERE cluster_id = ?",
                            [into, other])
        con.execute("UPDATE faces SET cluster_id = ?, assign_reason = ? "
                    "WHERE cluster_id = ?", [into, f"merged from cluster {other}", other])
        con.execute("UPDATE face_pins SET cluster_id = ? WHERE cluster_id = ?", [into, other])
        con.execute("DELETE FROM face_rejections WHERE cluster_id = ? AND face_id IN "
                    "(SELECT face_id FROM face_rejections WHERE cluster_id = ?)",
                    [other, into])
        con.execute("UPDATE face_rejections SET cluster_id = ? WHERE cluster_id = ?",
                    [into, other])
        if into in names or other in names:
            con.execute("INSERT OR REPLACE INTO face_pins (face_id, cluster_id) "
                        "SELECT face_id, cluster_id FROM faces WHERE cluster_id = ?", [into])
        con.execute("DELETE FROM clusters WHERE cluster_id = ?", [other])
        self._refresh_cluster(con, into)
        return into

    def reject_faces(self, con: duckdb.DuckDBPyConnection, face_ids: Sequence[int],
                     cluster_id: int) -> int:
        ids = [int(f) for f in face_ids]
        con.executemany("INSERT OR REPLACE INTO face_rejections (face_id, cluster_id) "
                        "VALUES (?, ?)", [[f, cluster_id] for f in ids])
        con.execute("DELETE FROM face_pins WHERE face_id IN (SELECT unnest(?)) "
                    "AND cluster_id = ?", [ids, cluster_id])
        con.execute("UPDATE faces SET cluster_id = NULL, assign_distance = NULL, "
                    "assign_reason = ? WHERE face_id IN (SELECT unnest(?)) AND cluster_id = ?",
                    [f"rejected from cluster {cluster_id} by the user", ids, cluster_id])
        self._refresh_cluster(con, cluster_id)
        return cluster_id

    def move_faces(self, con: duckdb.DuckDBPyConnection, face_ids: Sequence[int],
                   cluster_id: int | None, reason: str = "moved here by the user") -> int:
        """Put faces in a cluster by hand (None: a new one); reclusters keep them there."""
        ids = [int(f) for f in face_ids]
        if cluster_id is None:
            row = con.execute(
                "SELECT max(c) FROM (SELECT max(cluster_id) AS c FROM clusters "
                "UNION ALL SELECT max(cluster_id) FROM faces "
                "UNION ALL SELECT max(cluster_id) FROM face_pins)").fetchone()
            cluster_id = (int(row[0]) if row and row[0] is not None else 0) + 1
            con.execute("INSERT INTO clusters (cluster_id, size) VALUES (?, 0)", [cluster_id])
        old = [int(r[0]) for r in con.execute(
            "SELECT DISTINCT cluster_id FROM faces WHERE face_id IN (SELECT unnest(?)) "
            "AND cluster_id IS NOT NULL", [ids]).fetchall()]
        con.execute("DELETE FROM face_rejections WHERE face_id IN (SELECT unnest(?)) "
                    "AND cluster_id = ?", [ids, cluster_id])
        con.executemany("INSERT OR REPLACE INTO face_pins (face_id, cluster_id) VALUES (?, ?)",
                        [[f, cluster_id] for f in ids])
        con.execute("UPDATE faces SET cluster_id = ?, assign_distance = NULL, "
                    "assign_reason = ? WHERE face_id IN (SELECT unnest(?))",
                    [cluster_id, reason, ids])
        for c in sorted({cluster_id, *old}):
            self._refresh_cluster(con, c)
        return cluster_id

    def _refresh_cluster(self, con: duckdb.DuckDBPyConnection, cluster_id: int) -> None:
        """Recompute a cluster's size and centroid from its members."""
        import numpy as np

        rows = con.execute("SELECT face_id, embedding FROM faces WHERE cluster_id = ? "
                           "ORDER BY face_id", [cluster_id]).fetchall()
        if not rows:
            con.execute("UPDATE clusters SET size = 0, centroid = NULL WHERE cluster_id = ?",
                        [cluster_id])
            return
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        vectors = vectors.reshape(len(rows), -1)
        centroid = vectors.mean(axis=0).astype(np.float32)
        self.set_centroid(con, cluster_id, centroid, len(rows))
        medoid = con.execute("SELECT medoid_face_id FROM clusters WHERE cluster_id = ?",
                             [cluster_id]).fetchone()
        members = [int(r[0]) for r in rows]
        if medoid is None or medoid[0] not in members:
            # the representative left: the member nearest the centroid stands in
            best = members[int(np.argmax(vectors @ centroid))]
            con.execute("UPDATE clusters SET medoid_face_id = ? WHERE cluster_id = ?",
                        [best, cluster_id])



def _person_row(r: tuple[Any, ...]) -> PersonRow:
    bbox = None if r[5] is None else [round(float(v), 1) for v in r[5:9]]
    return PersonRow(cluster_id=int(r[0]), name=r[1], size=int(r[2]),
                     medoid_face_id=None if r[3] is None else int(r[3]), medoid_bbox=bbox,
                     medoid_path=r[4])
