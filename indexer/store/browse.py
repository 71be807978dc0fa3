"""Reads for the web app's pages: people and faces paged in SQL, a photo with its faces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..migrations import HISTORY_SINCE, MEDOIDS_SINCE
from .engine import duckdb
from .faces import id_filter
from .rows import Change

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np

    from ..types import Matrix
    from .bulkrows import BrowseFace, BrowsePerson, PhotoRow


def _bbox(row: Sequence[Any], at: int) -> tuple[float, float, float, float] | None:
    if row[at] is None:
        return None
    return (float(row[at]), float(row[at + 1]), float(row[at + 2]), float(row[at + 3]))


_PEOPLE_SQL = (
    # people and clusters only: each cluster keeps a copy of its medoid's box and photo hash
    # (migration 0004; StoreBase.sync_medoids), so a page of people reads no face or photo
    # (a join with every face and photo was most of its time right after a write, when
    # nothing of the catalog is in memory yet)
    "SELECT c.cluster_id, p.name, c.size, c.medoid_face_id, count(*) OVER () AS total, "
    "{medoid} FROM clusters c LEFT JOIN people p ON p.cluster_id = c.cluster_id "
    "WHERE (c.size > 0 OR p.name IS NOT NULL) {where}"
    "ORDER BY (p.name IS NULL), c.size DESC, c.cluster_id {limit}")
_MEDOID_COLUMNS = "c.medoid_of, c.medoid_x1, c.medoid_y1, c.medoid_x2, c.medoid_y2, c.medoid_hash"
_NO_MEDOID_COLUMNS = "NULL, NULL, NULL, NULL, NULL, NULL"  # a catalog from before 0004

_FACE_COLUMNS = ("SELECT face_id, image_id, x1, y1, x2, y2, cluster_id, assign_distance, "
                 "assign_reason FROM faces ")


class BrowseMixin:
    def people_page(self, query: str | None, offset: int,
                    limit: int) -> tuple[list[BrowsePerson], int]:
        """People (named first, then largest) whose name contains `query` (any case), or
        whose cluster id is `query`; one page of them and how many match in all."""
        where = ""
        params: list[Any] = []
        if query:
            where = ("AND (contains(lower(p.name), lower(?)) "
                     "OR CAST(c.cluster_id AS VARCHAR) = ?) ")
            params += [query, query.strip()]
        sql = self._people_sql(where, "LIMIT ? OFFSET ?")
        with self._read() as con:
            rows = con.execute(sql, [*params, limit, offset]).fetchall()
            if not rows and offset > 0:  # past the end: still say how many there are
                first = con.execute(sql, [*params, 1, 0]).fetchone()
                return [], int(first[4]) if first else 0
            people = self._with_medoids(con, rows)
        return people, int(rows[0][4]) if rows else 0

    def named_people(self, limit: int) -> list[BrowsePerson]:
        """The named people, largest first (at most `limit`)."""
        sql = self._people_sql("AND p.name IS NOT NULL ", "LIMIT ?")
        with self._read() as con:
            return self._with_medoids(con, con.execute(sql, [limit]).fetchall())

    def person(self, cluster_id: int) -> BrowsePerson:
        with self._read() as con:
            rows = con.execute(self._people_sql("AND c.cluster_id = ? ", ""),
                               [cluster_id]).fetchall()
            if not rows:
                raise NotFound(f"no person {cluster_id} in {self.settings.home}")
            return self._with_medoids(con, rows)[0]

    def _people_sql(self, where: str, limit: str) -> str:
        kept = self._schema_at_open >= MEDOIDS_SINCE  # type: ignore[attr-defined]
        return _PEOPLE_SQL.format(medoid=_MEDOID_COLUMNS if kept else _NO_MEDOID_COLUMNS,
                                  where=where, limit=limit)

    def _with_medoids(self, con: duckdb.DuckDBPyConnection,
                      rows: Sequence[Sequence[Any]]) -> list[BrowsePerson]:
        """People rows (cluster_id, name, size, medoid_face_id, total, medoid_of, box, hash)
        as BrowsePersons: the medoid's box and photo hash from the cluster's copy, or, where
        it has none in step (a catalog from before the copies), looked up by id."""
        from .bulkrows import BrowsePerson

        boxes: dict[int, Sequence[Any]] = {}
        hashes: dict[int, str | None] = {}
        medoids = [int(r[3]) for r in rows if r[3] is not None and r[5] != r[3]]
        if medoids:
            where, params = id_filter("face_id", medoids)
            boxes = {int(r[0]): r for r in con.execute(
                f"SELECT face_id, x1, y1, x2, y2, image_id FROM faces WHERE {where}",
                params).fetchall()}
            hashes = self._photo_hashes(con, [int(b[5]) for b in boxes.values()])
        out = []
        for r in rows:
            bbox, photo = None, None
            if r[3] is not None and r[5] == r[3]:
                bbox, photo = _bbox(r, 6), r[10]
            elif r[3] is not None and int(r[3]) in boxes:
                box = boxes[int(r[3])]
                bbox, photo = _bbox(box, 1), hashes.get(int(box[5]))
            out.append(BrowsePerson(
                cluster_id=int(r[0]), name=r[1], size=int(r[2]),
                medoid_face_id=None if r[3] is None else int(r[3]), medoid_bbox=bbox,
                medoid_hash=photo if bbox is not None else None))
        return out

    def _photo_hashes(self, con: duckdb.DuckDBPyConnection,
                      image_ids: Sequence[int]) -> dict[int, str | None]:
        if not image_ids:
            return {}
        where, params = id_filter("image_id", image_ids)
        return {int(i): h for i, h in con.execute(
            f"SELECT image_id, content_hash FROM images WHERE {where}", params).fetchall()}

    def _browse_faces(self, con: duckdb.DuckDBPyConnection, rest: str,
                      params: Sequence[Any]) -> list[BrowseFace]:
        """Faces (`rest`: the WHERE, ORDER and LIMIT of a query on faces alone) with their
        photos' paths and hashes and their people's names, looked up by id after."""
        from .bulkrows import BrowseFace

        rows = con.execute(_FACE_COLUMNS + rest, list(params)).fetchall()
        if not rows:
            return []
        where, ids = id_filter("image_id", {int(r[1]) for r in rows})
        photos = {int(i): (p, h) for i, p, h in con.execute(
            f"SELECT image_id, path, content_hash FROM images WHERE {where}", ids).fetchall()}
        clusters = {int(r[6]) for r in rows if r[6] is not None and r[6] >= 0}
        names: dict[int, str] = {}
        if clusters:
            where, ids = id_filter("cluster_id", clusters)
            names = {int(c): str(n) for c, n in con.execute(
                f"SELECT cluster_id, name FROM people WHERE {where}", ids).fetchall()}
        out = []
        for r in rows:
            if int(r[1]) not in photos:  # as the join did: a face of no photo is not shown
                continue
            path, content_hash = photos[int(r[1])]
            cid = None if r[6] is None or r[6] < 0 else int(r[6])
            bbox = _bbox(r, 2)
            assert bbox is not None
            out.append(BrowseFace(face_id=int(r[0]), image_id=int(r[1]), path=str(path),
                                  bbox=bbox, cluster_id=cid,
                                  person=None if cid is None else names.get(cid),
                                  assign_distance=r[7], assign_reason=r[8],
                                  content_hash=content_hash))
        return out

    def person_faces(self, cluster_id: int, offset: int, limit: int) -> list[BrowseFace]:
        """One page of a person's faces, by face id."""
        with self._read() as con:
            return self._browse_faces(con, "WHERE cluster_id = ? ORDER BY face_id "
                                      "LIMIT ? OFFSET ?", [cluster_id, limit, offset])

    def browse_faces(self, face_ids: Sequence[int]) -> list[BrowseFace]:
        if not face_ids:
            return []
        where, params = id_filter("face_id", face_ids)
        with self._read() as con:
            return self._browse_faces(con, f"WHERE {where} ORDER BY face_id", params)

    def unassigned_faces(self, limit: int) -> tuple[np.ndarray, Matrix, int]:
        """The newest `limit` faces that belong to nobody: ids, vectors, and how many in all."""
        import numpy as np

        with self._read() as con:
            result = con.execute(
                "SELECT face_id, embedding, count(*) OVER () AS total FROM faces "
                "WHERE cluster_id IS NULL OR cluster_id < 0 ORDER BY face_id DESC LIMIT ?",
                [limit]).fetchnumpy()
        ids = np.asarray(result["face_id"], dtype=np.int64)
        dim = self.model.dim
        if len(ids) == 0:
            return ids, np.zeros((0, dim), dtype=np.float32), 0
        vectors = np.frombuffer(b"".join(result["embedding"]), dtype=np.float32)
        return ids, vectors.reshape(len(ids), dim).copy(), int(result["total"][0])

    def rejections_of(self, face_ids: Sequence[int]) -> set[tuple[int, int]]:
        """(face_id, cluster_id) pairs the user ruled out, for these faces."""
        with self._read() as con:
            rows = con.execute("SELECT face_id, cluster_id FROM face_rejections "
                               "WHERE face_id IN (SELECT unnest(?))",
                               [[int(i) for i in face_ids]]).fetchall()
        return {(int(f), int(c)) for f, c in rows}

    def photo(self, image_id: int) -> tuple[PhotoRow, list[BrowseFace]]:
        """A catalog photo and its faces; NotFound for an id the catalog does not hold."""
        with self._read() as con:
            row = con.execute("SELECT image_id, path, status, error, width, height, content_hash "
                              "FROM images WHERE image_id = ?", [image_id]).fetchone()
            if row is None:
                raise NotFound(f"no photo {image_id} in {self.settings.home}")
            faces = self._browse_faces(con, "WHERE image_id = ? ORDER BY face_id", [image_id])
        from .bulkrows import PhotoRow

        photo = PhotoRow(image_id=int(row[0]), path=str(row[1]), status=str(row[2]),
                         error=row[3], width=row[4], height=row[5], content_hash=row[6])
        return photo, faces

    def face_source(self, face_id: int) -> BrowseFace:
        """A face with the path and content hash of its photo; NotFound when absent."""
        faces = self.browse_faces([face_id])
        if not faces:
            raise NotFound(f"no face {face_id} in {self.settings.home}")
        return faces[0]

    def recent_changes(self, limit: int) -> list[Change]:
        """The newest corrections (none in a catalog from before the history table: its
        schema version, read when the Store opened, tells; information_schema costs more)."""
        if self._schema_at_open < HISTORY_SINCE:  # type: ignore[attr-defined]
            return []
        return self.history(limit)  # type: ignore[attr-defined,no-any-return]
