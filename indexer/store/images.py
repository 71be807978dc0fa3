"""Image rows: paths, sizes, hashes, moves and failures."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .engine import duckdb

if TYPE_CHECKING:
    from ..types import ImageRecord
    from .bulkrows import NewImage

log = logging.getLogger(__name__)


class ImagesMixin:
    # ------------------------------------------------------------------ images
    def images_under(self, roots: Sequence[Path]) -> dict[str, ImageRecord]:
        """Catalog rows whose path lies under any of `roots` (absolute, resolved)."""
        from ..types import ImageRecord

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
        from ..types import ImageRecord

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
        from ..types import ImageRecord

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
        from .bulkrows import NewImage

        return self.add_images(con, [NewImage(path=path, size=size, mtime=mtime,
                                              content_hash=content_hash, status=status,
                                              error=error, width=width, height=height)])[0]

    def add_images(self, con: duckdb.DuckDBPyConnection, images: Sequence[NewImage]) -> list[int]:
        """Insert rows for paths the catalog does not hold yet, in one bulk insert; returns
        their image ids (from the image counter, never reused)."""
        if not images:
            return []
        first = self._take_ids(con, "image", len(images))
        ids = list(range(first, first + len(images)))
        cols = list(zip(*((i.path, i.size, i.mtime, i.content_hash, i.status, i.error,
                           i.width, i.height) for i in images), strict=True))
        con.execute(
            "INSERT INTO images (image_id, path, size, mtime, content_hash, status, error, "
            "width, height, indexed_at) SELECT unnest(?), unnest(?), unnest(?::BIGINT[]), "
            "unnest(?::DOUBLE[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::INTEGER[]), now()",
            [ids, *(list(c) for c in cols)])
        return ids

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

