"""The FAISS cache: a base index file plus a delta log, derived from the catalog (the truth).

- `faces.faiss`, the base: exact search (IndexIDMap2 over IndexFlatIP) below
  `settings.faiss_ivf_min_faces` faces, else IVF on inner product storing
  `settings.faiss_ivf_kind` (default 4-bit fast-scan PQ codes), probing
  `settings.faiss_nprobe` lists (chosen by measurement; see README "Performance"). Written
  atomically (temporary file, fsync, rename), with sidecars (`sidecars.py`): its sorted ids
  and, for PQ codes, the exact vectors in that order, on which a search re-ranks its
  `settings.faiss_refine` best candidates. Readers map the sidecars (and an IVF-Flat base), so
  a query reads only the rows it needs; a copied home's are found by the base's content hash.
- `faces.delta`, the log (`delta.py`): every committed batch appends the ids it added (with
  vectors) and removed. Persisting a batch is O(batch); a writer never loads the base for it.
- Readers replay the log into a small exact index of added faces and a set of removed ids
  (excluded from the base's search), then check the whole against the catalog (count, sum and
  xor of face ids) and repair any difference from it (writing the repair, as a writer would).
  Face ids are never reused, so replaying is idempotent: a crash between writing a new base
  and emptying the log is harmless, and a batch killed before its log write is found missing
  and taken from the catalog.
- A writer compacts base + log into a new base when the log holds more than
  `settings.faiss_delta_max` faces, and rebuilds the base from the catalog when it is missing,
  unreadable, or of the wrong kind or size for the number of faces (IVF is retrained).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import delta as delta_log
from . import sidecars
from .faceindex import (
    IVF_KINDS,
    FaceIndex,
    _base_ids,
    _is_ivf,
    build_base,
    faiss_nlist,
    ivf_kind,
    ivf_lists,
    refined,
    rows_of,
)

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FaceIndex", "VectorsMixin", "faiss_nlist", "ivf_lists", "persisted_ids"]

class VectorsMixin:
    # ------------------------------------------------------------------ paths and kinds
    @property
    def _delta_path(self) -> Path:
        return self.settings.faiss_path.with_suffix(".delta")

    def _want_ivf(self, n_faces: int) -> bool:
        return n_faces >= self.settings.faiss_ivf_min_faces

    def _base_fits(self, index: Any, n_faces: int) -> bool:
        """Whether a base of this kind and size still suits n faces (else rebuild it)."""
        if hasattr(index, "id_map"):
            return not self._want_ivf(n_faces)
        if not self._want_ivf(n_faces // 2):  # shrunk far below the IVF threshold
            return False
        if ivf_kind(index) != self.settings.faiss_ivf_kind:
            return False
        return ivf_lists(n_faces) <= 2 * faiss_nlist(index)

    def _catalog_signature(self) -> tuple[int, int, int]:
        with self._read() as con:
            row = con.execute(
                "SELECT count(*), coalesce(sum(face_id), 0), coalesce(bit_xor(face_id), 0) "
                "FROM faces").fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def nearest_face_ids(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """The ids of the k stored faces nearest each vector (-1 pads); faces added in an open
        transaction are not among them until it commits."""
        import numpy as np

        index = self.faiss_index()
        if index.ntotal == 0 or len(vectors) == 0:
            return np.full((len(vectors), 0), -1, dtype=np.int64)
        _, ids = index.search(np.asarray(vectors, dtype=np.float32), min(k, index.ntotal))
        return ids.astype(np.int64)

    def drop_mapped_pages(self) -> None:
        """Give back the pages of the memory-mapped exact vectors that searches touched (the
        watch daemon calls it after each batch). They stay in the page cache, so the next
        search finds them at no disk cost, but leave this process's RSS: a re-ranked
        candidate maps ~56 KB of the file around its row (the kernel's fault-around), so at 1M
        faces a daemon held ~460 MB of the 512 MB file after its first 20 searches."""
        import mmap

        vectors = None if self._faiss is None else self._faiss.vectors
        mapped = getattr(vectors, "_mmap", None)
        if mapped is not None and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED)

    # ------------------------------------------------------------------ loading
    def faiss_index(self) -> FaceIndex:
        """The search index: base file plus delta log, checked against the catalog (and
        rebuilt from it when the base is missing or unreadable)."""
        if self._faiss is not None:
            return self._faiss
        view, reason = self._persisted_view()
        if view is None:
            if self._catalog_signature()[0] > 0 or self.settings.faiss_path.exists():
                log.warning("FAISS index %s is %s; rebuilding it from the catalog",
                            self.settings.faiss_path, reason)
            return self._rebuild_faiss()
        self._faiss = view
        if view.signature() != self._catalog_signature():
            self._repair_faiss(view)
        return view

    def _persisted_view(self) -> tuple[FaceIndex | None, str | None]:
        """What the files hold: the mapped base plus the replayed log (no repair)."""
        path = self.settings.faiss_path
        for _ in range(3):  # the key of the file read (a writer may replace it meanwhile)
            key = sidecars.file_key(path)
            base, reason = self._read_base(mmap=True)
            if base is None:
                return None, reason
            if sidecars.file_key(path) == key:
                break
        cached = self.__dict__.get("_base_ids_cache")
        if cached is not None and cached[0] == key:
            ids = cached[1]
        else:
            ids = self._read_base_ids(base, key)
            self.__dict__["_base_ids_cache"] = (key, ids)
        vectors = self._read_base_vectors(base, ids, key)
        view = FaceIndex(base, ids, self.model.dim, self.settings.faiss_nprobe, ids_sorted=True,
                         vectors=vectors, refine=self.settings.faiss_refine)
        replay = delta_log.replay(self._delta_path, self.model.dim)
        self._apply_replay(view, replay)
        self._delta_valid_bytes, self._delta_faces = replay.valid_bytes, replay.faces
        return view, None

    def _read_base_ids(self, base: Any, key: str) -> np.ndarray:
        """The base's face ids, sorted: memory-mapped from the sidecar written with it (a few
        pages read per lookup), else gathered from the base's lists and the sidecar written."""
        import numpy as np

        sidecar = sidecars.find(self.settings.faiss_path, key).get("ids")
        try:
            if sidecar is not None:
                ids = np.load(sidecar, mmap_mode="r")
                if ids.dtype == np.int64 and ids.ndim == 1 and len(ids) == base.ntotal:
                    return ids
        except (OSError, ValueError):
            pass
        ids = np.sort(_base_ids(base))
        self._persist(sidecars.write_ids, self.settings.faiss_path, key, ids)
        self._persist(sidecars.write_sum, self.settings.faiss_path, key)
        return ids

    def _read_base_vectors(self, base: Any, ids: np.ndarray, key: str) -> np.ndarray | None:
        """For a base of compressed codes, the exact vectors of its sorted ids: memory-mapped
        from the sidecar written with it (a query reads only its candidates' rows), else taken
        from the catalog and the sidecar written. None for a base that needs none."""
        import numpy as np

        if not refined(base):
            return None
        sidecar = sidecars.find(self.settings.faiss_path, key).get("vectors")
        try:
            if sidecar is not None:
                vectors = np.load(sidecar, mmap_mode="r")
                if vectors.dtype == np.float32 and vectors.shape == (len(ids), self.model.dim):
                    return vectors
        except (OSError, ValueError):
            pass
        vectors = self._catalog_vectors(ids)
        self._persist(sidecars.write_vectors, self.settings.faiss_path, key, vectors)
        self._persist(sidecars.write_sum, self.settings.faiss_path, key)
        return vectors

    def _catalog_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The catalog's vectors of these sorted ids (zeros for an id it no longer holds: such
        a face is removed from the base's search by the log or the repair)."""
        import numpy as np

        have, vectors = self.embeddings()
        out = np.zeros((len(ids), self.model.dim), np.float32)
        pos, found = rows_of(have, ids)
        out[found] = vectors[pos[found]]
        return out

    def _read_base(self, *, mmap: bool) -> tuple[Any, str | None]:
        import faiss

        path = self.settings.faiss_path
        if not path.exists():
            return None, "missing"
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError as exc:
            return None, f"unreadable ({str(exc).splitlines()[0][:120]})"
        if index.d != self.model.dim or not (hasattr(index, "id_map") or _is_ivf(index)):
            return None, f"not an index of {self.model.dim}-d faces"
        return index, None

    @staticmethod
    def _apply_replay(view: FaceIndex, replay: delta_log.DeltaReplay) -> None:
        import numpy as np

        if replay.removed:
            view.remove(np.fromiter(replay.removed, np.int64, len(replay.removed)))
        if replay.added:
            ids = np.fromiter(replay.added.keys(), np.int64, len(replay.added))
            view.add(ids, np.stack(list(replay.added.values())))

    def _repair_faiss(self, view: FaceIndex) -> None:
        """Bring the index in step with the catalog: drop extra ids, add missing ones."""
        import numpy as np

        have = view.ids()
        with self._read() as con:
            want = np.asarray(con.execute("SELECT face_id FROM faces").fetchnumpy()["face_id"],
                              dtype=np.int64)
        extra = np.setdiff1d(have, want)
        missing = np.setdiff1d(want, have)
        level = logging.INFO if self.read_only else logging.WARNING
        log.log(level, "FAISS index %s is out of step with the catalog (%d missing, %d extra); "
                "repairing it from the catalog", self.settings.faiss_path, len(missing),
                len(extra))
        records = []
        if len(extra):
            view.remove(extra)
            records.append(delta_log.encode(delta_log.REMOVE, extra, None, view.dim))
        if len(missing):
            ids, vectors = self.embeddings(missing.tolist())
            view.add(ids, vectors)
            records.append(delta_log.encode(delta_log.ADD, ids, vectors, view.dim))
        self._persist(self._append_delta, records, len(extra) + len(missing))

    def _rebuild_faiss(self) -> FaceIndex:
        """A new base from every embedding in the catalog (written unless read-only)."""
        ids, vectors = self.embeddings()  # sorted by id
        base = self._build_base(ids, vectors)
        exact = vectors if refined(base) else None
        view = FaceIndex(base, ids, self.model.dim, self.settings.faiss_nprobe, ids_sorted=True,
                         vectors=exact, refine=self.settings.faiss_refine)
        self._faiss = view
        self._persist(self._write_base, base, exact)
        return view

    def rebuild_faiss_if_unfit(self) -> bool:
        """Rebuild the base from the catalog when it is missing or of another kind or size than
        the settings ask for (as the next writer would); True when it was rebuilt."""
        view, _ = self._persisted_view()
        if view is not None and self._base_fits(view.base, self._catalog_signature()[0]):
            return False
        self._faiss = None
        self._rebuild_faiss()
        return True

    def _persist(self, write: Any, *args: Any) -> None:
        """Write a rebuild or repair (readers too: the files are a cache, written atomically
        or appended whole); a home a reader cannot write to is only repaired in memory."""
        try:
            write(*args)
        except OSError as exc:
            if not self.read_only:
                raise
            log.info("could not update the FAISS files in %s (%s); repaired in memory only",
                     self.settings.home, exc)

    def _build_base(self, ids: np.ndarray, vectors: np.ndarray) -> Any:
        if self.settings.faiss_ivf_kind not in IVF_KINDS:
            from ..errors import FaceidxError

            raise FaceidxError(f"setting faiss_ivf_kind: {self.settings.faiss_ivf_kind!r} is "
                               f"not one of {', '.join(IVF_KINDS)}")
        nlist = ivf_lists(len(ids)) if self._want_ivf(len(ids)) else None
        return build_base(ids, vectors, self.model.dim, nlist, self.settings.faiss_ivf_kind)

    # ------------------------------------------------------------------ writing
    def _apply_pending_faiss(self) -> None:
        """After a commit: append the batch to the delta log (O(batch)); update a loaded view."""
        if not self._pending_add and not self._pending_remove:
            return
        import numpy as np

        dim = self.model.dim
        records, faces = [], 0
        if self._pending_remove:
            removed = np.asarray(self._pending_remove, dtype=np.int64)
            records.append(delta_log.encode(delta_log.REMOVE, removed, None, dim))
            faces += len(removed)
            if self._faiss is not None:
                self._faiss.remove(removed)
        for ids, vectors in self._pending_add:
            records.append(delta_log.encode(delta_log.ADD, ids, vectors, dim))
            faces += len(ids)
            if self._faiss is not None:
                self._faiss.add(ids, vectors)
        self._pending_add.clear()
        self._pending_remove.clear()
        self._append_delta(records, faces)

    def _append_delta(self, records: list[bytes], faces: int) -> None:
        if not records:
            return
        if not self.settings.faiss_path.exists():  # a new home (or a lost base): the catalog
            self._faiss = None                     # already holds this batch; build from it
            self._rebuild_faiss()
            return
        if self._delta_valid_bytes is None:  # first append of this process: find a torn tail
            replay = delta_log.replay(self._delta_path, self.model.dim)
            self._delta_valid_bytes, self._delta_faces = replay.valid_bytes, replay.faces
        delta_log.append(self._delta_path, records, valid_bytes=self._delta_valid_bytes)
        self._delta_valid_bytes += sum(len(r) for r in records)
        self._delta_faces += faces
        self._faiss_dirty = True

    def save_faiss(self) -> None:
        """After writes: check what the files hold against the catalog and append any repair;
        compact base + log into a new base when the log passed settings.faiss_delta_max
        faces; rebuild a base that is missing or no longer fits the number of faces."""
        if self.read_only or self._model is None:
            return
        if not self._faiss_dirty and self.settings.faiss_path.exists():
            return
        import numpy as np

        self._faiss_dirty = False
        catalog = self._catalog_signature()
        view, _ = self._persisted_view()
        if view is None or not self._base_fits(view.base, catalog[0]):
            self._faiss = None
            self._rebuild_faiss()
            return
        if view.signature() != catalog:
            self._repair_faiss(view)
        if self._delta_faces <= self.settings.faiss_delta_max:
            return
        base, _ = self._read_base(mmap=False)
        assert base is not None
        if view.removed:
            base.remove_ids(np.fromiter(view.removed, np.int64, len(view.removed)))
        ids = view.ids()
        added = ids[~np.isin(ids, view.base_ids)]
        add_ids, add_vectors = self.embeddings(added.tolist()) if len(added) else (
            np.zeros(0, np.int64), np.zeros((0, self.model.dim), np.float32))
        if len(add_ids):
            base.add_with_ids(add_vectors, add_ids)
        vectors = None
        if view.vectors is not None:  # the exact vectors beside it, in the new base's id order
            kept = ~np.isin(view.base_ids, np.fromiter(view.removed, np.int64,
                                                       len(view.removed)))
            all_ids = np.concatenate([view.base_ids[kept], add_ids])
            vectors = np.concatenate([np.asarray(view.vectors)[kept], add_vectors])
            if len(all_ids) > 1 and not (np.diff(all_ids) > 0).all():  # new ids are larger
                vectors = vectors[np.argsort(all_ids, kind="stable")]  # (never reused): rare
        log.info("FAISS: folded %d logged changes into a new base of %d faces",
                 self._delta_faces, base.ntotal)
        self._write_base(base, vectors)
        self._faiss = None  # the next search maps the new base

    def _write_base(self, base: Any, vectors: np.ndarray | None = None) -> None:
        """Write the base atomically (temporary file, fsync, rename), with its sorted ids and
        (for a base of codes) exact vectors beside it, then empty the log."""
        import faiss
        import numpy as np

        path = self.settings.faiss_path
        fd, tmp = tempfile.mkstemp(prefix=".faces.", suffix=".faiss.tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o644)  # like the catalog beside it, not mkstemp's 0600
        try:
            faiss.write_index(base, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            ids = np.sort(_base_ids(base))
            key = sidecars.file_key(Path(tmp))
            sidecars.write_ids(path, key, ids)
            if vectors is not None:
                assert len(vectors) == len(ids)
                sidecars.write_vectors(path, key, vectors)
            sidecars.write_sum(path, key, Path(tmp))  # last: this key's sidecars are complete
            os.replace(tmp, path)  # keeps the inode and mtime, so the sidecar's key holds
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        sidecars.drop_stale(path)
        delta_log.reset(self._delta_path)
        self._delta_valid_bytes, self._delta_faces = 0, 0
        self._faiss_dirty = False


def persisted_ids(faiss_path: Path, dim: int) -> np.ndarray:
    """The face ids the files on disk hold (base + delta log), sorted, without any repair from
    the catalog: what a reader starts from. For checks and tests."""
    import faiss

    base = faiss.read_index(str(faiss_path), faiss.IO_FLAG_MMAP)
    view = FaceIndex(base, _base_ids(base), dim, 1)
    VectorsMixin._apply_replay(view, delta_log.replay(faiss_path.with_suffix(".delta"), dim))
    return view.ids()
