"""Reads for the web app's pages: people and faces paged in SQL, a photo with its faces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import NotFound
from ..types import Matrix
from .rows import BrowseFace, BrowsePerson, Change, PhotoRow


def _bbox(row: Sequence[Any], at: int) -> tuple[float, float, float, float] | None:
    if row[at] is None:
        return None
    return (float(row[at]), float(row[at + 1]), float(row[at + 2]), float(row[at + 3]))


_PEOPLE_SQL = (
    # the page of people first, then the medoid's box and photo for those rows only (joining
    # every cluster's medoid before the LIMIT read all faces: most of a cold page's time)
    "WITH page AS (SELECT c.cluster_id, p.name, c.size, c.medoid_face_id, "
    "count(*) OVER () AS total "
    "FROM clusters c LEFT JOIN people p ON p.cluster_id = c.cluster_id "
    "WHERE (c.size > 0 OR p.name IS NOT NULL) {where}"
    "ORDER BY (p.name IS NULL), c.size DESC, c.cluster_id {limit}) "
    "SELECT page.cluster_id, page.name, page.size, page.medoid_face_id, f.x1, f.y1, f.x2, f.y2, "
    "page.total, i.content_hash "
    "FROM page LEFT JOIN faces f ON f.face_id = page.medoid_face_id "
    "LEFT JOIN images i ON i.image_id = f.image_id "
    "ORDER BY (page.name IS NULL), page.size DESC, page.cluster_id")

_FACE_SQL = (
    "SELECT f.face_id, f.image_id, i.path, f.x1, f.y1, f.x2, f.y2, f.cluster_id, p.name, "
    "f.assign_distance, f.assign_reason, i.content_hash "
    "FROM faces f JOIN images i USING (image_id) "
    "LEFT JOIN people p ON p.cluster_id = f.cluster_id ")


def _person(row: Sequence[Any]) -> BrowsePerson:
    return BrowsePerson(cluster_id=int(row[0]), name=row[1], size=int(row[2]),
                        medoid_face_id=None if row[3] is None else int(row[3]),
                        medoid_bbox=_bbox(row, 4), medoid_hash=row[9])


def _face(row: Sequence[Any]) -> BrowseFace:
    bbox = _bbox(row, 3)
    assert bbox is not None
    return BrowseFace(face_id=int(row[0]), image_id=int(row[1]), path=str(row[2]), bbox=bbox,
                      cluster_id=None if row[7] is None or row[7] < 0 else int(row[7]),
                      person=row[8], assign_distance=row[9], assign_reason=row[10],
                      content_hash=row[11])


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
        sql = _PEOPLE_SQL.format(where=where, limit="LIMIT ? OFFSET ?")
        with self._read() as con:
            rows = con.execute(sql, [*params, limit, offset]).fetchall()
            if not rows and offset > 0:  # past the end: still say how many there are
                first = con.execute(sql, [*params, 1, 0]).fetchone()
                return [], int(first[8]) if first else 0
        return [_person(r) for r in rows], int(rows[0][8]) if rows else 0

    def named_people(self, limit: int) -> list[BrowsePerson]:
        """The named people, largest first (at most `limit`)."""
        sql = _PEOPLE_SQL.format(where="AND p.name IS NOT NULL ", limit="LIMIT ?")
        with self._read() as con:
            rows = con.execute(sql, [limit]).fetchall()
        return [_person(r) for r in rows]

    def person(self, cluster_id: int) -> BrowsePerson:
        with self._read() as con:
            row = con.execute(_PEOPLE_SQL.format(where="AND c.cluster_id = ? ", limit=""),
                              [cluster_id]).fetchone()
        if row is None:
            raise NotFound(f"no person {cluster_id} in {self.settings.home}")
        return _person(row)

    def person_faces(self, cluster_id: int, offset: int, limit: int) -> list[BrowseFace]:
        """One page of a person's faces, by face id."""
        with self._read() as con:
            rows = con.execute(_FACE_SQL + "WHERE f.cluster_id = ? ORDER BY f.face_id "
                               "LIMIT ? OFFSET ?", [cluster_id, limit, offset]).fetchall()
        return [_face(r) for r in rows]

    def browse_faces(self, face_ids: Sequence[int]) -> list[BrowseFace]:
        with self._read() as con:
            rows = con.execute(_FACE_SQL + "WHERE f.face_id IN (SELECT unnest(?)) "
                               "ORDER BY f.face_id", [[int(i) for i in face_ids]]).fetchall()
        return [_face(r) for r in rows]

    def unassigned_faces(self, limit: int) -> tuple[np.ndarray, Matrix, int]:
        """The newest `limit` faces that belong to nobody: ids, vectors, and how many in all."""
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
            faces = con.execute(_FACE_SQL + "WHERE f.image_id = ? ORDER BY f.face_id",
                                [image_id]).fetchall()
        photo = PhotoRow(image_id=int(row[0]), path=str(row[1]), status=str(row[2]),
                         error=row[3], width=row[4], height=row[5], content_hash=row[6])
        return photo, [_face(r) for r in faces]

    def face_source(self, face_id: int) -> BrowseFace:
        """A face with the path and content hash of its photo; NotFound when absent."""
        faces = self.browse_faces([face_id])
        if not faces:
            raise NotFound(f"no face {face_id} in {self.settings.home}")
        return faces[0]

    def recent_changes(self, limit: int) -> list[Change]:
        """The newest corrections (none in a catalog from before the history table)."""
        with self._read() as con:
            exists = con.execute("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_name = 'history'").fetchone()
            if not exists or not exists[0]:
                return []
            return self.history(limit)  # type: ignore[attr-defined,no-any-return]
