"""The one owner of persistent state: a DuckDB catalog (the truth) and a FAISS file (a cache).

Every SQL statement and every FAISS call in faceidx lives in this module. The catalog holds every
embedding; the FAISS index is derived from it, written atomically, and rebuilt whenever it is
missing, unreadable or out of step with the catalog.

DuckDB lets one process write a file at a time. A Store opens its connection lazily and
`release()` closes it, so a long-running writer (the watch daemon) holds the file only while it
works; other processes wait up to `settings.lock_timeout` for it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from .errors import FaceidxError, IndexBusy, IndexNotFound, ModelMismatch, NotFound
from .migrations import SCHEMA_VERSION, apply_migrations
from .settings import Settings
from .types import BBox, FaceResult, ImageRecord, Match, Matrix, ModelInfo

log = logging.getLogger(__name__)


def distance_from_ip(ip: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product."""
    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None))


@dataclass(frozen=True)
class StoredFace:
    face_id: int
    image_id: int
    path: str
    bbox: BBox
    landmarks: tuple[float, ...]
    score: float
    cluster_id: int | None
    assign_distance: float | None
    assign_reason: str | None


@dataclass(frozen=True)
class ClusterSnapshot:
    """What a recluster reads: every face's vector and previous id, and the user's corrections."""

    face_ids: np.ndarray
    vectors: Matrix
    previous: np.ndarray  # cluster id per face, -1 for none
    named: set[int]
    pins: dict[int, int]  # face_id -> cluster_id
    rejected: set[tuple[int, int]]  # (face_id, cluster_id)
    next_cluster_id: int


@dataclass(frozen=True)
class ClusterRow:
    cluster_id: int
    size: int
    centroid: np.ndarray
    medoid_face_id: int


@dataclass(frozen=True)
class PersonRow:
    cluster_id: int
    name: str | None
    size: int
    medoid_face_id: int | None
    medoid_path: str | None


@dataclass(frozen=True)
class Counts:
    images: int
    ok: int
    failed: int
    faces: int
    clusters: int
    people: int
    unassigned: int


class Store:
    """DuckDB catalog plus FAISS cache of one index home."""

    def __init__(self, settings: Settings, *, read_only: bool = False,
                 keep_open: bool = True) -> None:
        self.settings = settings
        self.read_only = read_only
        self.keep_open = keep_open
        self._con: duckdb.DuckDBPyConnection | None = None
        self._faiss: Any = None
        self._faiss_dirty = False
        self._pending_add: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_remove: list[int] = []
        self._model: ModelInfo | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, settings: Settings, model: ModelInfo | None = None, *,
             read_only: bool = False, keep_open: bool = True) -> Store:
        """Open the index in settings.home; create it (with `model`) when writing and absent.

        With `model` given, an index made by another model raises ModelMismatch. With
        keep_open=False the catalog file is opened for each unit of work and closed after it,
        so other processes can use it in between (the watch daemon does this).
        """
        if not settings.catalog_path.exists():
            if read_only or model is None:
                raise IndexNotFound(
                    f"no index at {settings.home}; run `faceidx index PATH` first "
                    "(or point --home / FACEIDX_HOME at an existing index)"
                )
            settings.home.mkdir(parents=True, exist_ok=True)
        store = cls(settings, read_only=read_only, keep_open=keep_open)
        try:
            if not read_only:
                with store.transaction() as con:
                    apply_migrations(con)
                    store._check_or_record_model(con, model)
            store._model = store._read_model()
            if model is not None and store._model is not None:
                _ensure_same_model(settings.home, store._model, model)
        except BaseException:
            store.close(save=False)
            raise
        return store

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            return self._con
        deadline = time.monotonic() + self.settings.lock_timeout
        delay = 0.02
        while True:
            try:
                self._con = duckdb.connect(str(self.settings.catalog_path),
                                           read_only=self.read_only)
                return self._con
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    if "lock" in str(exc).lower():
                        raise IndexBusy(
                            f"{self.settings.catalog_path}: another faceidx process kept the "
                            f"catalog busy for {self.settings.lock_timeout:.0f} s; try again"
                        ) from exc
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def release(self) -> None:
        """Close the DuckDB connection so other processes can open the catalog."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def close(self, *, save: bool = True) -> None:
        if save and not self.read_only:
            self.save_faiss()
        self.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(save=exc[0] is None)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One atomic unit of work; FAISS follows only when the catalog commits."""
        if self._faiss is None and not self.read_only and self._model is not None:
            self.faiss_index()  # load (or repair) before changing, so changes apply in memory
        con = self._connect()
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self._pending_add.clear()
            self._pending_remove.clear()
            self._done_with_connection()
            raise
        self._apply_pending_faiss()
        self._done_with_connection()

    @contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        nested = self._con is not None
        try:
            yield self._connect()
        finally:
            if not nested:
                self._done_with_connection()

    def _done_with_connection(self) -> None:
        if not self.keep_open:
            self.release()

    # ------------------------------------------------------------------ model and meta
    def _check_or_record_model(self, con: duckdb.DuckDBPyConnection,
                               model: ModelInfo | None) -> None:
        stored = _model_from_meta(con)
        if stored is None and model is not None:
            for key, value in (("model_name", model.name), ("model_dim", str(model.dim)),
                               ("model_weights", model.weights)):
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def _read_model(self) -> ModelInfo | None:
        with self._read() as con:
            return _model_from_meta(con)

    @property
    def recorded_model(self) -> ModelInfo | None:
        """The model recorded in the index, or None for an index not yet given one."""
        return self._model

    @property
    def model(self) -> ModelInfo:
        if self._model is None:
            raise IndexNotFound(f"the index at {self.settings.home} has no model recorded yet")
        return self._model

    def schema_version(self) -> int:
        with self._read() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        with self._read() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    # ------------------------------------------------------------------ images
    def images_under(self, roots: Sequence[Path]) -> dict[str, ImageRecord]:
        """Catalog rows whose path lies under any of `roots` (absolute, resolved)."""
        with self._read() as con:
            rows = con.execute(
                "SELECT image_id, path, size, mtime, content_hash, status, error FROM images"
            ).fetchall()
        prefixes = [str(r).rstrip(os.sep) + os.sep for r in roots]
        exact = {str(r) for r in roots}
        out = {}
        for row in rows:
            rec = ImageRecord(*row)
            if rec.path in exact or any(rec.path.startswith(p) for p in prefixes):
                out[rec.path] = rec
        return out

    def images_at(self, paths: Sequence[str]) -> dict[str, ImageRecord]:
        """Catalog rows for exactly these paths."""
        with self._read() as con:
            return self.images_at_con(con, paths)

    def images_at_con(self, con: duckdb.DuckDBPyConnection,
                      paths: Sequence[str]) -> dict[str, ImageRecord]:
        if not paths:
            return {}
        rows = con.execute(
            "SELECT image_id, path, size, mtime, content_hash, status, error FROM images "
            "WHERE path IN (SELECT unnest(?))", [list(paths)]).fetchall()
        return {str(r[1]): ImageRecord(*r) for r in rows}

    def image_ids_at(self, con: duckdb.DuckDBPyConnection,
                     paths: Sequence[str]) -> dict[str, int]:
        return {p: r.image_id for p, r in self.images_at_con(con, paths).items()}

    def images_by_hash(self, hashes: Sequence[str]) -> dict[str, list[ImageRecord]]:
        if not hashes:
            return {}
        with self._read() as con:
            rows = con.execute(
                "SELECT image_id, path, size, mtime, content_hash, status, error FROM images "
                "WHERE status = 'ok' AND content_hash IN (SELECT unnest(?))",
                [list(set(hashes))]).fetchall()
        out: dict[str, list[ImageRecord]] = {}
        for row in rows:
            rec = ImageRecord(*row)
            out.setdefault(rec.content_hash or "", []).append(rec)
        return out

    def failures(self) -> list[tuple[str, str]]:
        with self._read() as con:
            rows = con.execute(
                "SELECT path, error FROM images WHERE status = 'failed' ORDER BY path").fetchall()
        return [(str(p), str(e)) for p, e in rows]

    # -- writes; each takes the connection of an open transaction
    def _next_id(self, con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
        row = con.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchone()
        return int(row[0]) if row else 1

    def upsert_image(self, con: duckdb.DuckDBPyConnection, *, path: str, size: int,
                     mtime: float, content_hash: str | None, status: str,
                     error: str | None = None, width: int | None = None,
                     height: int | None = None) -> int:
        """Insert the row for `path`, or replace it (dropping the faces of its older content);
        returns its image_id."""
        row = con.execute("SELECT image_id FROM images WHERE path = ?", [path]).fetchone()
        if row is not None:
            image_id = int(row[0])
            self.clear_faces(con, image_id)
            con.execute(
                "UPDATE images SET size = ?, mtime = ?, content_hash = ?, status = ?, error = ?, "
                "width = ?, height = ?, indexed_at = now() WHERE image_id = ?",
                [size, mtime, content_hash, status, error, width, height, image_id])
            return image_id
        image_id = self._next_id(con, "images", "image_id")
        con.execute(
            "INSERT INTO images (image_id, path, size, mtime, content_hash, status, error, "
            "width, height, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [image_id, path, size, mtime, content_hash, status, error, width, height])
        return image_id

    def touch_image(self, con: duckdb.DuckDBPyConnection, image_id: int, *, size: int,
                    mtime: float) -> None:
        con.execute("UPDATE images SET size = ?, mtime = ? WHERE image_id = ?",
                    [size, mtime, image_id])

    def move_image(self, con: duckdb.DuckDBPyConnection, image_id: int, new_path: str, *,
                   size: int, mtime: float) -> None:
        """Give an image a new path; its faces (and their ids) stay as they are.

        An image the new path held before (overwritten by the move) is forgotten."""
        self._forget_path(con, new_path, keep=image_id)
        con.execute("UPDATE images SET path = ?, size = ?, mtime = ? WHERE image_id = ?",
                    [new_path, size, mtime, image_id])

    def move_prefix(self, con: duckdb.DuckDBPyConnection, old: str, new: str) -> int:
        """Rename every image under folder `old` to lie under `new`; returns how many."""
        old_p, new_p = old.rstrip(os.sep) + os.sep, new.rstrip(os.sep) + os.sep
        rows = con.execute("SELECT image_id, path FROM images WHERE starts_with(path, ?)",
                           [old_p]).fetchall()
        for image_id, path in rows:
            target = new_p + str(path)[len(old_p):]
            self._forget_path(con, target, keep=int(image_id))
            con.execute("UPDATE images SET path = ? WHERE image_id = ?", [target, image_id])
        return len(rows)

    def _forget_path(self, con: duckdb.DuckDBPyConnection, path: str, *, keep: int) -> None:
        rows = con.execute("SELECT image_id FROM images WHERE path = ? AND image_id <> ?",
                           [path, keep]).fetchall()
        self.remove_images(con, [int(r[0]) for r in rows])

    def remove_images(self, con: duckdb.DuckDBPyConnection, image_ids: Sequence[int]) -> int:
        """Delete images and their faces; returns the number of faces removed."""
        if not image_ids:
            return 0
        ids = list(image_ids)
        face_ids = [int(r[0]) for r in con.execute(
            "SELECT face_id FROM faces WHERE image_id IN (SELECT unnest(?))", [ids]).fetchall()]
        self._delete_faces(con, face_ids)
        con.execute("DELETE FROM images WHERE image_id IN (SELECT unnest(?))", [ids])
        return len(face_ids)

    def clear_faces(self, con: duckdb.DuckDBPyConnection, image_id: int) -> int:
        face_ids = [int(r[0]) for r in con.execute(
            "SELECT face_id FROM faces WHERE image_id = ?", [image_id]).fetchall()]
        self._delete_faces(con, face_ids)
        return len(face_ids)

    def _delete_faces(self, con: duckdb.DuckDBPyConnection, face_ids: list[int]) -> None:
        if not face_ids:
            return
        affected = [int(r[0]) for r in con.execute(
            "SELECT DISTINCT cluster_id FROM faces WHERE face_id IN (SELECT unnest(?)) "
            "AND cluster_id IS NOT NULL", [face_ids]).fetchall()]
        for table in ("face_pins", "face_rejections"):
            con.execute(f"DELETE FROM {table} WHERE face_id IN (SELECT unnest(?))", [face_ids])
        con.execute("DELETE FROM faces WHERE face_id IN (SELECT unnest(?))", [face_ids])
        if affected:
            con.execute(
                "UPDATE clusters SET size = (SELECT count(*) FROM faces f "
                "WHERE f.cluster_id = clusters.cluster_id) "
                "WHERE cluster_id IN (SELECT unnest(?))", [affected])
        self._pending_remove.extend(face_ids)

    def add_faces(self, con: duckdb.DuckDBPyConnection, image_id: int,
                  faces: Sequence[FaceResult]) -> list[int]:
        """Store faces of one image; returns their new face ids."""
        if not faces:
            return []
        first = self._next_id(con, "faces", "face_id")
        ids = list(range(first, first + len(faces)))
        con.executemany(
            "INSERT INTO faces (face_id, image_id, x1, y1, x2, y2, landmarks, det_score, "
            "embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[fid, image_id, *f.bbox, list(f.landmarks), f.score,
              np.asarray(f.embedding, dtype=np.float32).tobytes()]
             for fid, f in zip(ids, faces, strict=True)])
        vectors = np.stack([np.asarray(f.embedding, dtype=np.float32) for f in faces])
        self._pending_add.append((np.asarray(ids, dtype=np.int64), vectors))
        return ids

    def copy_faces(self, con: duckdb.DuckDBPyConnection, source_image_id: int,
                   target_image_id: int) -> list[int]:
        """Give a byte-identical copy of an image the same faces, without re-embedding."""
        rows = con.execute(
            "SELECT x1, y1, x2, y2, landmarks, det_score, embedding FROM faces "
            "WHERE image_id = ? ORDER BY face_id", [source_image_id]).fetchall()
        faces = [FaceResult(bbox=(r[0], r[1], r[2], r[3]), landmarks=tuple(r[4] or ()),
                            score=float(r[5]), embedding=np.frombuffer(r[6], dtype=np.float32))
                 for r in rows]
        return self.add_faces(con, target_image_id, faces)

    # ------------------------------------------------------------------ faces
    def counts(self) -> Counts:
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
        return Counts(*(int(v) for v in row))

    def face_ids_of_image(self, image_id: int) -> list[int]:
        with self._read() as con:
            return [int(r[0]) for r in con.execute(
                "SELECT face_id FROM faces WHERE image_id = ? ORDER BY face_id",
                [image_id]).fetchall()]

    def faces(self, face_ids: Sequence[int] | None = None) -> list[StoredFace]:
        """Face rows (all, or the given ids) joined with their image path, by face id."""
        sql = ("SELECT f.face_id, f.image_id, i.path, f.x1, f.y1, f.x2, f.y2, f.landmarks, "
               "f.det_score, f.cluster_id, f.assign_distance, f.assign_reason "
               "FROM faces f JOIN images i USING (image_id)")
        params: list[Any] = []
        if face_ids is not None:
            sql += " WHERE f.face_id IN (SELECT unnest(?))"
            params.append([int(i) for i in face_ids])
        with self._read() as con:
            rows = con.execute(sql + " ORDER BY f.face_id", params).fetchall()
        return [StoredFace(face_id=int(r[0]), image_id=int(r[1]), path=str(r[2]),
                           bbox=(r[3], r[4], r[5], r[6]), landmarks=tuple(r[7] or ()),
                           score=float(r[8]), cluster_id=None if r[9] is None else int(r[9]),
                           assign_distance=r[10], assign_reason=r[11]) for r in rows]

    def embeddings(self, face_ids: Sequence[int] | None = None) -> tuple[np.ndarray, Matrix]:
        """Face ids (sorted) and their embeddings as one float32 matrix."""
        sql = "SELECT face_id, embedding FROM faces"
        params: list[Any] = []
        if face_ids is not None:
            sql += " WHERE face_id IN (SELECT unnest(?))"
            params.append([int(i) for i in face_ids])
        with self._read() as con:
            result = con.execute(sql + " ORDER BY face_id", params).fetchnumpy()
        ids = np.asarray(result["face_id"], dtype=np.int64)
        dim = self.model.dim
        if len(ids) == 0:
            return ids, np.zeros((0, dim), dtype=np.float32)
        vectors = np.frombuffer(b"".join(result["embedding"]), dtype=np.float32)
        return ids, vectors.reshape(len(ids), dim).copy()

    # ------------------------------------------------------------------ FAISS cache
    def _catalog_signature(self) -> tuple[int, int, int]:
        with self._read() as con:
            row = con.execute(
                "SELECT count(*), coalesce(sum(face_id), 0), coalesce(bit_xor(face_id), 0) "
                "FROM faces").fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    @staticmethod
    def _faiss_signature(index: Any) -> tuple[int, int, int]:
        import faiss

        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        if len(ids) == 0:
            return 0, 0, 0
        return int(index.ntotal), int(ids.sum()), int(np.bitwise_xor.reduce(ids))

    def _new_faiss(self) -> Any:
        import faiss

        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.model.dim))

    def faiss_index(self) -> Any:
        """The FAISS index, loaded from its file, or rebuilt from the catalog when stale."""
        if self._faiss is not None:
            return self._faiss
        import faiss

        path = self.settings.faiss_path
        reason = None
        index = None
        if not path.exists():
            reason = "missing"
        else:
            try:
                index = faiss.read_index(str(path))
                if index.d != self.model.dim or not hasattr(index, "id_map"):
                    reason = f"not an index of {self.model.dim}-d faces"
            except RuntimeError as exc:
                reason = f"unreadable ({str(exc).splitlines()[0][:120]})"
        if reason is not None:
            if self._catalog_signature()[0] > 0 or path.exists():
                log.warning("FAISS index %s is %s; rebuilding it from the catalog", path, reason)
            return self._rebuild_faiss()
        if self._faiss_signature(index) != self._catalog_signature():
            self._repair_faiss(index)
        self._faiss = index
        return index

    def _repair_faiss(self, index: Any) -> None:
        """Bring a loaded FAISS index in step with the catalog: drop extra ids, add missing."""
        import faiss

        have = faiss.vector_to_array(index.id_map).astype(np.int64)
        with self._read() as con:
            want = np.asarray(con.execute("SELECT face_id FROM faces").fetchnumpy()["face_id"],
                              dtype=np.int64)
        extra = np.setdiff1d(have, want)
        missing = np.setdiff1d(want, have)
        level = logging.INFO if self.read_only else logging.WARNING
        log.log(level, "FAISS index %s is out of step with the catalog (%d missing, %d extra); "
                "repairing it from the catalog", self.settings.faiss_path, len(missing), len(extra))
        if len(extra):
            index.remove_ids(extra)
        if len(missing):
            ids, vectors = self.embeddings(missing.tolist())
            index.add_with_ids(vectors, ids)
        self._faiss = index
        self._faiss_dirty = True
        if not self.read_only:
            self.save_faiss()

    def _rebuild_faiss(self) -> Any:
        index = self._new_faiss()
        ids, vectors = self.embeddings()
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._faiss = index
        self._faiss_dirty = True
        self.save_faiss()
        return index

    def _apply_pending_faiss(self) -> None:
        if not self._pending_add and not self._pending_remove:
            return
        if self._faiss is None:
            # Not loaded: the file is now behind the catalog and will be rebuilt when needed,
            # unless we load it now and apply the changes. Loading is cheaper than rebuilding.
            self._pending_add.clear()
            self._pending_remove.clear()
            self.faiss_index()
            return
        if self._pending_remove:
            self._faiss.remove_ids(np.asarray(self._pending_remove, dtype=np.int64))
            self._pending_remove.clear()
        for ids, vectors in self._pending_add:
            self._faiss.add_with_ids(vectors, ids)
        self._pending_add.clear()
        self._faiss_dirty = True

    def save_faiss(self) -> None:
        """Write the FAISS index atomically (temporary file, fsync, rename)."""
        if self._faiss is None or not self._faiss_dirty:
            return
        import faiss

        path = self.settings.faiss_path
        fd, tmp = tempfile.mkstemp(prefix=".faces.", suffix=".faiss.tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o644)  # like the catalog beside it, not mkstemp's 0600
        try:
            faiss.write_index(self._faiss, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._faiss_dirty = False

    def search(self, vectors: Matrix, k: int) -> list[list[Match]]:
        """For each query vector, the k nearest indexed faces (Euclidean distance)."""
        index = self.faiss_index()
        if index.ntotal == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        sims, ids = index.search(np.asarray(vectors, dtype=np.float32), min(k, index.ntotal))
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        rows = {f.face_id: f for f in self.faces(wanted)}
        names = self.cluster_names()
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

    # ------------------------------------------------------------------ clusters and people
    def cluster_names(self) -> dict[int | None, str]:
        with self._read() as con:
            rows = con.execute(
                "SELECT cluster_id, name FROM people WHERE cluster_id IS NOT NULL").fetchall()
        return {int(c): str(n) for c, n in rows}

    def centroids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster ids, their centroids (mean member vectors) and sizes, for assignment."""
        with self._read() as con:
            result = con.execute(
                "SELECT cluster_id, centroid, size FROM clusters "
                "WHERE size > 0 AND centroid IS NOT NULL ORDER BY cluster_id").fetchnumpy()
        ids = np.asarray(result["cluster_id"], dtype=np.int64)
        dim = self.model.dim
        if len(ids) == 0:
            return ids, np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        vectors = np.frombuffer(b"".join(result["centroid"]), dtype=np.float32)
        return ids, vectors.reshape(len(ids), dim).copy(), np.asarray(result["size"], np.int64)

    def rejections(self, face_ids: Sequence[int] | None = None) -> set[tuple[int, int]]:
        """(face_id, cluster_id) pairs a user said are not the same person."""
        sql = "SELECT face_id, cluster_id FROM face_rejections"
        params: list[Any] = []
        if face_ids is not None:
            sql += " WHERE face_id IN (SELECT unnest(?))"
            params.append([int(i) for i in face_ids])
        with self._read() as con:
            return {(int(f), int(c)) for f, c in con.execute(sql, params).fetchall()}

    def set_assignments(self, con: duckdb.DuckDBPyConnection,
                        rows: Sequence[tuple[int, int | None, float | None, str]]) -> None:
        """Record (face_id, cluster_id or None, distance, reason) for faces."""
        if rows:
            con.executemany(
                "UPDATE faces SET cluster_id = ?, assign_distance = ?, assign_reason = ? "
                "WHERE face_id = ?", [[c, d, r, f] for f, c, d, r in rows])

    def set_centroid(self, con: duckdb.DuckDBPyConnection, cluster_id: int,
                     centroid: np.ndarray, size: int) -> None:
        con.execute(
            "UPDATE clusters SET centroid = ?, size = ?, updated_at = now() WHERE cluster_id = ?",
            [np.asarray(centroid, dtype=np.float32).tobytes(), int(size), int(cluster_id)])

    # -- reclustering: a snapshot in, final ids out
    def cluster_snapshot(self) -> ClusterSnapshot:
        """Everything a recluster reads, in one consistent read."""
        ids, vectors = self.embeddings()
        with self._read() as con:
            prev = con.execute("SELECT face_id, coalesce(cluster_id, -1) AS cluster_id "
                               "FROM faces ORDER BY face_id").fetchnumpy()
            named = {int(r[0]) for r in con.execute(
                "SELECT cluster_id FROM people WHERE cluster_id IS NOT NULL").fetchall()}
            pins = {int(f): int(c) for f, c in con.execute(
                "SELECT face_id, cluster_id FROM face_pins").fetchall()}
            rejected = {(int(f), int(c)) for f, c in con.execute(
                "SELECT face_id, cluster_id FROM face_rejections").fetchall()}
            row = con.execute("SELECT coalesce(max(cluster_id), 0) + 1 FROM clusters").fetchone()
        previous = np.asarray(prev["cluster_id"], dtype=np.int64)
        assert np.array_equal(np.asarray(prev["face_id"], dtype=np.int64), ids)
        return ClusterSnapshot(face_ids=ids, vectors=vectors, previous=previous, named=named,
                               pins=pins, rejected=rejected,
                               next_cluster_id=int(row[0]) if row else 1)

    def apply_clustering(self, face_ids: np.ndarray, cluster_ids: np.ndarray,
                         distances: np.ndarray, reason: str,
                         clusters: Sequence[ClusterRow], keep: set[int]) -> None:
        """Write a recluster's result in one transaction.

        Faces not in `face_ids` (added meanwhile) keep their assignment if their cluster still
        exists. Cluster rows not in `clusters` are dropped unless in `keep` (named ones).
        """
        assigned = np.where(cluster_ids >= 0, cluster_ids, -1).astype(np.int64)
        with self.transaction() as con:
            con.execute(
                "UPDATE faces SET cluster_id = CASE WHEN m.c < 0 THEN NULL ELSE m.c END, "
                "assign_distance = CASE WHEN m.c < 0 THEN NULL ELSE m.d END, "
                "assign_reason = ? "
                "FROM (SELECT unnest(?) AS f, unnest(?) AS c, unnest(?) AS d) m "
                "WHERE faces.face_id = m.f",
                [reason, face_ids.astype(np.int64).tolist(), assigned.tolist(),
                 np.asarray(distances, dtype=np.float64).tolist()])
            live = [c.cluster_id for c in clusters]
            con.execute("DELETE FROM clusters WHERE cluster_id NOT IN (SELECT unnest(?)) "
                        "AND cluster_id NOT IN (SELECT unnest(?))", [live, sorted(keep)])
            con.execute("DELETE FROM clusters WHERE cluster_id IN (SELECT unnest(?))", [live])
            if clusters:
                con.executemany(
                    "INSERT INTO clusters (cluster_id, size, centroid, medoid_face_id) "
                    "VALUES (?, ?, ?, ?)",
                    [[c.cluster_id, c.size, np.asarray(c.centroid, np.float32).tobytes(),
                      c.medoid_face_id] for c in clusters])
            con.execute(
                "UPDATE faces SET cluster_id = NULL, assign_distance = NULL, "
                "assign_reason = 'its cluster was dissolved by a recluster' "
                "WHERE cluster_id IS NOT NULL AND cluster_id NOT IN "
                "(SELECT cluster_id FROM clusters)")
            con.execute(
                "UPDATE clusters SET size = (SELECT count(*) FROM faces f "
                "WHERE f.cluster_id = clusters.cluster_id)")
            self._bump_generation(con)

    def _bump_generation(self, con: duckdb.DuckDBPyConnection) -> None:
        """Tell other processes (the watch daemon) that clusters changed."""
        row = con.execute("SELECT value FROM meta WHERE key = 'clusters_generation'").fetchone()
        con.execute("INSERT OR REPLACE INTO meta VALUES ('clusters_generation', ?)",
                    [str(int(row[0]) + 1 if row else 1)])

    # -- people and corrections
    def people(self) -> list[PersonRow]:
        """Every cluster with its size, name (if any) and representative face."""
        with self._read() as con:
            rows = con.execute(
                "SELECT c.cluster_id, p.name, c.size, c.medoid_face_id, i.path "
                "FROM clusters c LEFT JOIN people p ON p.cluster_id = c.cluster_id "
                "LEFT JOIN faces f ON f.face_id = c.medoid_face_id "
                "LEFT JOIN images i ON i.image_id = f.image_id "
                "WHERE c.size > 0 OR p.name IS NOT NULL "
                "ORDER BY (p.name IS NULL), c.size DESC, c.cluster_id").fetchall()
        return [PersonRow(cluster_id=int(r[0]), name=r[1], size=int(r[2]),
                          medoid_face_id=None if r[3] is None else int(r[3]), medoid_path=r[4])
                for r in rows]

    def cluster_id_for(self, ref: str) -> int:
        """A cluster named by its id or by a person's name."""
        with self._read() as con:
            if ref.lstrip("-").isdigit():
                row = con.execute("SELECT cluster_id FROM clusters WHERE cluster_id = ?",
                                  [int(ref)]).fetchone()
            else:
                row = con.execute("SELECT cluster_id FROM people WHERE name = ?",
                                  [ref]).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"no cluster or person {ref!r} in {self.settings.home}; "
                           "see `faceidx people`")
        return int(row[0])

    def require_face(self, face_id: int) -> None:
        with self._read() as con:
            if con.execute("SELECT 1 FROM faces WHERE face_id = ?", [face_id]).fetchone() is None:
                raise NotFound(f"no face {face_id} in {self.settings.home}")

    def name_cluster(self, cluster_id: int, name: str) -> None:
        with self.transaction() as con:
            other = con.execute("SELECT cluster_id FROM people WHERE name = ?", [name]).fetchone()
            if other is not None and other[0] != cluster_id:
                raise FaceidxError(f"{name!r} already names cluster {other[0]}; "
                                   f"use `faceidx merge {other[0]} {cluster_id}` to join them")
            row = con.execute("SELECT person_id FROM people WHERE cluster_id = ?",
                              [cluster_id]).fetchone()
            if row is not None:
                con.execute("UPDATE people SET name = ? WHERE person_id = ?", [name, row[0]])
            else:
                pid = self._next_id(con, "people", "person_id")
                con.execute("INSERT INTO people (person_id, name, cluster_id) VALUES (?, ?, ?)",
                            [pid, name, cluster_id])
            # A named cluster's members are the user's: pin them so reclusters keep them.
            con.execute("INSERT OR REPLACE INTO face_pins (face_id, cluster_id) "
                        "SELECT face_id, cluster_id FROM faces WHERE cluster_id = ?",
                        [cluster_id])
            self._bump_generation(con)

    def merge_clusters(self, into: int, other: int) -> str | None:
        """Move every face of `other` into `into`; returns a name that was dropped, if any."""
        with self.transaction() as con:
            names = dict(con.execute("SELECT cluster_id, name FROM people "
                                     "WHERE cluster_id IN (?, ?)", [into, other]).fetchall())
            dropped = None
            if other in names:
                if into in names:
                    dropped = str(names[other])
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
            self._bump_generation(con)
        return dropped

    def reject_face(self, face_id: int, cluster_id: int) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO face_rejections (face_id, cluster_id) "
                        "VALUES (?, ?)", [face_id, cluster_id])
            con.execute("DELETE FROM face_pins WHERE face_id = ? AND cluster_id = ?",
                        [face_id, cluster_id])
            con.execute("UPDATE faces SET cluster_id = NULL, assign_distance = NULL, "
                        "assign_reason = ? WHERE face_id = ? AND cluster_id = ?",
                        [f"rejected from cluster {cluster_id} by the user", face_id, cluster_id])
            self._refresh_cluster(con, cluster_id)
            self._bump_generation(con)

    def move_face(self, face_id: int, cluster_id: int) -> None:
        """Put a face in a cluster by hand; reclusters and assignment keep it there."""
        with self.transaction() as con:
            old = con.execute("SELECT cluster_id FROM faces WHERE face_id = ?",
                              [face_id]).fetchone()
            con.execute("DELETE FROM face_rejections WHERE face_id = ? AND cluster_id = ?",
                        [face_id, cluster_id])
            con.execute("INSERT OR REPLACE INTO face_pins (face_id, cluster_id) VALUES (?, ?)",
                        [face_id, cluster_id])
            con.execute("UPDATE faces SET cluster_id = ?, assign_distance = NULL, "
                        "assign_reason = 'moved here by the user' WHERE face_id = ?",
                        [cluster_id, face_id])
            self._refresh_cluster(con, cluster_id)
            if old is not None and old[0] is not None and old[0] != cluster_id:
                self._refresh_cluster(con, int(old[0]))
            self._bump_generation(con)

    def _refresh_cluster(self, con: duckdb.DuckDBPyConnection, cluster_id: int) -> None:
        """Recompute a cluster's size and centroid from its members."""
        rows = con.execute("SELECT embedding FROM faces WHERE cluster_id = ?",
                           [cluster_id]).fetchall()
        if not rows:
            con.execute("UPDATE clusters SET size = 0, centroid = NULL WHERE cluster_id = ?",
                        [cluster_id])
            return
        vectors = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32)
        centroid = vectors.reshape(len(rows), -1).mean(axis=0).astype(np.float32)
        self.set_centroid(con, cluster_id, centroid, len(rows))


def _model_from_meta(con: duckdb.DuckDBPyConnection) -> ModelInfo | None:
    rows = dict(con.execute(
        "SELECT key, value FROM meta WHERE key IN ('model_name', 'model_dim', 'model_weights')"
    ).fetchall())
    if "model_name" not in rows:
        return None
    return ModelInfo(name=str(rows["model_name"]), dim=int(rows["model_dim"]),
                     weights=str(rows["model_weights"]))


def _ensure_same_model(home: Path, stored: ModelInfo, wanted: ModelInfo) -> None:
    if stored != wanted:
        raise ModelMismatch(
            f"the index at {home} was made by model {stored.name} ({stored.dim}-d, weights "
            f"{stored.weights}), not {wanted.name} ({wanted.dim}-d, weights {wanted.weights}); "
            f"use --model {stored.name}, or another --home for a new index"
        )


__all__ = ["SCHEMA_VERSION", "Counts", "Store", "StoredFace", "distance_from_ip"]
