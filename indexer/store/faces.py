"""Face rows: adding, copying, deleting, reading, and similarity search."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .engine import duckdb
from .rows import Counts, distance_from_ip

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np

    from ..types import FaceResult, Match, Matrix
    from .bulkrows import StoredFace

log = logging.getLogger(__name__)

INLINE_IDS_MAX = 2_000
"""Up to this many ids, id_filter writes them into the SQL as integer literals."""


def id_filter(column: str, ids: Iterable[int]) -> tuple[str, list[Any]]:
    """An SQL condition keeping the rows whose `column` is one of `ids`.

    A few ids go in as integer literals, which DuckDB pushes into the table scan (row groups
    whose min/max cannot hold them are skipped): at 1M faces, 10 ids cost a fraction of a
    bound list, which it hash-joins against every row. Many ids go in as one list that is
    joined. Returns the condition and its parameters; literals are formatted from int()."""
    values = sorted({int(i) for i in ids})
    if not values:
        return "FALSE", []
    if len(values) <= INLINE_IDS_MAX:
        return f"{column} IN ({', '.join(map(str, values))})", []
    return f"{column} IN (SELECT unnest(?))", [values]


class FacesMixin:
    def _delete_faces(self, con: duckdb.DuckDBPyConnection, face_ids: list[int]) -> None:
        if not face_ids:
            return
        affected = [int(r[0]) for r in con.execute(
            "SELECT DISTINCT cluster_id FROM faces WHERE face_id IN (SELECT unnest(?)) "
            "AND cluster_id IS NOT NULL", [face_ids]).fetchall()]
        for table in ("face_pins", "face_rejections"):
            con.execute(f"DELETE FROM {table} WHERE face_id IN (SELECT unnest(?))", [face_ids])
        con.execute("DELETE FROM faces WHERE face_id IN (SELECT unnest(?))", [face_ids])
        # a deleted medoid's box and photo go from its cluster's copy (StoreBase.sync_medoids)
        con.execute("UPDATE clusters SET medoid_of = NULL WHERE medoid_face_id IN "
                    "(SELECT unnest(?))", [face_ids])
        if affected:
            con.execute(
                "UPDATE clusters SET size = (SELECT count(*) FROM faces f "
                "WHERE f.cluster_id = clusters.cluster_id) "
                "WHERE cluster_id IN (SELECT unnest(?))", [affected])
        self._pending_remove.extend(face_ids)

    def add_faces(self, con: duckdb.DuckDBPyConnection, image_id: int,
                  faces: Sequence[FaceResult]) -> list[int]:
        """Store faces of one image; returns their new face ids."""
        return self.add_faces_many(con, [(image_id, faces)])

    def add_faces_many(self, con: duckdb.DuckDBPyConnection,
                       per_image: Sequence[tuple[int, Sequence[FaceResult]]]) -> list[int]:
        """Store the faces of many images in one bulk insert; returns their new face ids in
        order. Ids come from the face counter (never reused), not from a max() per row."""
        import numpy as np

        image_ids = [image_id for image_id, faces in per_image for _ in faces]
        faces = [f for _, image_faces in per_image for f in image_faces]
        if not faces:
            return []
        first = self._take_ids(con, "face", len(faces))
        ids = np.arange(first, first + len(faces), dtype=np.int64)
        vectors = np.stack([np.asarray(f.embedding, dtype=np.float32) for f in faces])
        boxes = np.asarray([f.bbox for f in faces], dtype=np.float64)
        con.execute(
            "INSERT INTO faces (face_id, image_id, x1, y1, x2, y2, landmarks, det_score, "
            "embedding) SELECT unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), "
            "unnest(?), unnest(?), unnest(?), unnest(?)",
            [ids.tolist(), image_ids, *(boxes[:, j].tolist() for j in range(4)),
             [list(f.landmarks) for f in faces], [float(f.score) for f in faces],
             [v.tobytes() for v in vectors]])
        self._pending_add.append((ids, vectors))
        return ids.tolist()

    def copy_faces(self, con: duckdb.DuckDBPyConnection, source_image_id: int,
                   target_image_id: int) -> list[int]:
        """Give a byte-identical copy of an image the same faces, without re-embedding."""
        import numpy as np

        from ..types import FaceResult

        rows = con.execute(
            "SELECT x1, y1, x2, y2, landmarks, det_score, embedding FROM faces "
            "WHERE image_id = ? ORDER BY face_id", [source_image_id]).fetchall()
        faces = [FaceResult(bbox=(r[0], r[1], r[2], r[3]), landmarks=tuple(r[4] or ()),
                            score=float(r[5]), embedding=np.frombuffer(r[6], dtype=np.float32))
                 for r in rows]
        return self.add_faces(con, target_image_id, faces)

    # ------------------------------------------------------------------ faces
    def counts(self, *, no_face: int | None = None) -> Counts:
        """The catalog's counts. `no_face`, when the caller knows it (summary.py, from a
        summary whose faces and read photos are unchanged since), spares the one count that
        scans every face (0.13 s of CPU at 1M faces)."""
        with self._read() as con:
            row = con.execute(
                "SELECT (SELECT count(*) FROM images), "
                "(SELECT count(*) FROM images WHERE status = 'ok'), "
                "(SELECT count(*) FROM images WHERE status = 'failed'), "
                "(SELECT count(*) FROM faces), "
                "(SELECT count(*) FROM clusters WHERE size > 0), "
                "(SELECT count(*) FROM people), "
                "(SELECT count(*) FROM faces WHERE cluster_id IS NULL OR cluster_id < 0)"
            ).fetchone()
            assert row is not None
            if no_face is None:
                # read images with no face: faces belong to 'ok' images only (a photo that
                # fails on a re-read loses its faces), so a distinct count replaces the anti
                # join over every image (at 1M faces 0.13 s of CPU against 0.42 s)
                found = con.execute("SELECT count(DISTINCT image_id) FROM faces").fetchone()
                assert found is not None
                no_face = int(row[1]) - int(found[0])
        return Counts(*(int(v) for v in row), no_face=no_face)

    def photos_first_faced(self, first_face_id: int, first_image_id: int) -> int:
        """How many photos have faces numbered from `first_face_id` on and none below it:
        the photos that gained their first face since the face counter stood there (ids
        only grow, so those faces are the newest rows, which DuckDB finds by the row groups'
        ranges). Photos numbered from `first_image_id` on (the image counter then) are new
        and had none; older ones are looked up."""
        with self._read() as con:
            ids = [int(r[0]) for r in con.execute(
                f"SELECT DISTINCT image_id FROM faces WHERE face_id >= {int(first_face_id)}"
            ).fetchall()]
            older = [i for i in ids if i < first_image_id]
            had = 0
            if older:
                where, params = id_filter("image_id", older)
                row = con.execute(
                    "SELECT count(DISTINCT image_id) FROM faces WHERE face_id < "
                    f"{int(first_face_id)} AND {where}", params).fetchone()
                had = int(row[0]) if row else 0
        return len(ids) - had

    def faces_of_bytes(self, content_hash: str) -> list[int]:
        """The faces of every indexed photo with these bytes (its content hash)."""
        with self._read() as con:
            return [int(r[0]) for r in con.execute(
                "SELECT face_id FROM faces WHERE image_id IN (SELECT image_id FROM images "
                "WHERE content_hash = ? AND status = 'ok') ORDER BY face_id",
                [content_hash]).fetchall()]

    def face_ids_of_image(self, image_id: int) -> list[int]:
        with self._read() as con:
            return [int(r[0]) for r in con.execute(
                "SELECT face_id FROM faces WHERE image_id = ? ORDER BY face_id",
                [image_id]).fetchall()]

    def faces(self, face_ids: Sequence[int] | None = None) -> list[StoredFace]:
        """Face rows (all, or the given ids) joined with their image path, by face id."""
        from .bulkrows import StoredFace

        cols = ("f.face_id, f.image_id, {path}, f.x1, f.y1, f.x2, f.y2, f.landmarks, "
                "f.det_score, f.cluster_id, f.assign_distance, f.assign_reason")
        with self._read() as con:
            if face_ids is None:
                rows = con.execute(f"SELECT {cols.format(path='i.path')} FROM faces f "
                                   "JOIN images i USING (image_id) ORDER BY f.face_id").fetchall()
            else:  # a few faces: look them up, then their paths (no join over every image)
                where, params = id_filter("f.face_id", face_ids)
                rows = con.execute(f"SELECT {cols.format(path='NULL')} FROM faces f "
                                   f"WHERE {where} ORDER BY f.face_id", params).fetchall()
                where, params = id_filter("image_id", {int(r[1]) for r in rows})
                paths = dict(con.execute(f"SELECT image_id, path FROM images WHERE {where}",
                                         params).fetchall())
                rows = [(r[0], r[1], paths[r[1]], *r[3:]) for r in rows]
        return [StoredFace(face_id=int(r[0]), image_id=int(r[1]), path=str(r[2]),
                           bbox=(r[3], r[4], r[5], r[6]), landmarks=tuple(r[7] or ()),
                           score=float(r[8]), cluster_id=None if r[9] is None else int(r[9]),
                           assign_distance=r[10], assign_reason=r[11]) for r in rows]

    def embeddings(self, face_ids: Sequence[int] | None = None) -> tuple[np.ndarray, Matrix]:
        """Face ids (sorted) and their embeddings as one float32 matrix."""
        import numpy as np

        where, params = ("TRUE", []) if face_ids is None else id_filter("face_id", face_ids)
        with self._read() as con:
            result = con.execute(f"SELECT face_id, embedding FROM faces WHERE {where} "
                                 "ORDER BY face_id", params).fetchnumpy()
        ids = np.asarray(result["face_id"], dtype=np.int64)
        dim = self.model.dim
        if len(ids) == 0:
            return ids, np.zeros((0, dim), dtype=np.float32)
        vectors = np.frombuffer(b"".join(result["embedding"]), dtype=np.float32)
        return ids, vectors.reshape(len(ids), dim).copy()

    def landmark_values(self) -> int:
        """The most landmark values (x, y per point) any face has; 0 for none."""
        with self._read() as con:
            row = con.execute("SELECT max(len(landmarks)) FROM faces").fetchone()
        return int(row[0] or 0) if row else 0

    def embedding_pages(self, page: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           Matrix]]:
        """Every face by face id, `page` at a time: face ids, image ids, cluster ids (-1 for
        none) and embeddings. Memory stays at one page whatever the index holds; read inside
        `snapshot()` so the pages agree with each other."""
        import numpy as np

        after = -1
        dim = self.model.dim
        while True:
            with self._read() as con:
                result = con.execute(
                    "SELECT face_id, image_id, coalesce(cluster_id, -1) AS cluster_id, embedding "
                    "FROM faces WHERE face_id > ? ORDER BY face_id LIMIT ?",
                    [after, page]).fetchnumpy()
            ids = np.asarray(result["face_id"], dtype=np.int64)
            if len(ids) == 0:
                return
            vectors = np.frombuffer(b"".join(result["embedding"]), dtype=np.float32)
            yield (ids, np.asarray(result["image_id"], dtype=np.int64),
                   np.asarray(result["cluster_id"], dtype=np.int64),
                   vectors.reshape(len(ids), dim))
            after = int(ids[-1])

    def face_pages(self, page: int) -> Iterator[tuple[list[StoredFace], list[str | None]]]:
        """Every face row by face id, `page` at a time, with its photo's content hash (what a
        face crop is keyed on). Read inside `snapshot()` for one consistent view."""
        from .bulkrows import StoredFace

        after = -1
        while True:
            with self._read() as con:
                rows = con.execute(
                    "SELECT f.face_id, f.image_id, i.path, f.x1, f.y1, f.x2, f.y2, f.landmarks, "
                    "f.det_score, f.cluster_id, f.assign_distance, f.assign_reason, "
                    "i.content_hash FROM faces f JOIN images i USING (image_id) "
                    "WHERE f.face_id > ? ORDER BY f.face_id LIMIT ?", [after, page]).fetchall()
            if not rows:
                return
            yield ([StoredFace(face_id=int(r[0]), image_id=int(r[1]), path=str(r[2]),
                               bbox=(r[3], r[4], r[5], r[6]), landmarks=tuple(r[7] or ()),
                               score=float(r[8]),
                               cluster_id=None if r[9] is None else int(r[9]),
                               assign_distance=r[10], assign_reason=r[11]) for r in rows],
                   [r[12] for r in rows])
            after = int(rows[-1][0])

    def search(self, vectors: Matrix, k: int, *, names: dict[int | None, str] | None = None
               ) -> list[list[Match]]:
        """For each query vector, the k nearest indexed faces (Euclidean distance); `names`:
        the people's names (cluster_names), when read already."""
        import numpy as np

        from ..types import Match

        index = self.faiss_index()
        if index.ntotal == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        sims, ids = index.search(np.asarray(vectors, dtype=np.float32), min(k, index.ntotal))
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        rows = {f.face_id: f for f in self.faces(wanted)}
        names = self.cluster_names() if names is None else names
        out = []
        for sim_row, id_row in zip(sims, ids, strict=True):
            matches = []
            for sim, fid in zip(distance_from_ip(sim_row), id_row, strict=True):
                face = rows.get(int(fid))
                if face is None:
                    continue
                matches.append(Match(face_id=face.face_id, path=face.path, bbox=face.bbox,
                                     distance=float(sim), cluster_id=face.cluster_id,
                                     person=names.get(face.cluster_id),
                                     assign_distance=face.assign_distance,
                                     assign_reason=face.assign_reason))
            out.append(matches)
        return out

