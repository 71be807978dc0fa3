"""The FAISS cache: derived from the catalog, written atomically, repaired when stale."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class VectorsMixin:
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

    def nearest_face_ids(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """The ids of the k stored faces nearest each vector (-1 pads); faces added in an open
        transaction are not among them until it commits."""
        index = self.faiss_index()
        if index.ntotal == 0 or len(vectors) == 0:
            return np.full((len(vectors), 0), -1, dtype=np.int64)
        _, ids = index.search(np.asarray(vectors, dtype=np.float32), min(k, index.ntotal))
        return ids.astype(np.int64)

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

