"""The files written beside a search base `faces.faiss` (vectors.py), named after the base
file's identity (`file_key`: inode, size, mtime, which a rename keeps): its sorted face ids
(`faces.ids-KEY.npy`), for a base of codes the exact vectors in that order
(`faces.vectors-KEY.npy`), and the SHA-256 of the base file (`faces.sum-KEY.txt`), written last.

A sidecar whose key no longer names the base (a crash between the renames, a base replaced) is
never read. A copy of the home (`cp -a`, rsync, a restore) gives the base a new inode: `find`
then hashes the base (~0.1 s per 75 MB, the PQ base of 1M faces) and adopts (renames) the
sidecars whose recorded hash matches; a base of other content is never paired with them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .files import replacing

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


def file_key(path: Path) -> str:
    """What names one written base file: its inode, size and mtime (a rename keeps them)."""
    try:
        return _key(path.stat())
    except FileNotFoundError:
        return "missing"


def _key(st: os.stat_result) -> str:
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


def ids_path(faiss_path: Path, key: str) -> Path:
    return faiss_path.with_name(f"{faiss_path.stem}.ids-{key}.npy")


def write_ids(faiss_path: Path, key: str, ids: np.ndarray) -> None:
    """Write the sorted ids of the base file `key` names, atomically. A sidecar whose key no
    longer names the base (a crash between the two renames, a base replaced) is never read."""
    import numpy as np

    with replacing(ids_path(faiss_path, key), ".faces.ids.") as fh:
        np.save(fh, np.ascontiguousarray(ids, dtype=np.int64))


def vectors_path(faiss_path: Path, key: str) -> Path:
    return faiss_path.with_name(f"{faiss_path.stem}.vectors-{key}.npy")


def write_vectors(faiss_path: Path, key: str, vectors: np.ndarray) -> None:
    """Write the exact vectors of the base file `key` names (rows in its sorted id order)."""
    import numpy as np

    with replacing(vectors_path(faiss_path, key), ".faces.vectors.") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))


def sum_path(faiss_path: Path, key: str) -> Path:
    return faiss_path.with_name(f"{faiss_path.stem}.sum-{key}.txt")


def _content_sum(base_path: Path, key: str) -> str | None:
    """The SHA-256 of the base file `key` names (None when the file at base_path is no longer
    that one). ~0.1 s for the 75 MB PQ base of 1M faces (SHA-NI, page cache)."""
    try:
        with open(base_path, "rb") as fh:
            if _key(os.fstat(fh.fileno())) != key:
                return None
            import hashlib  # here: OpenSSL's load is a few ms of every light command

            return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def write_sum(faiss_path: Path, key: str, base_path: Path | None = None) -> None:
    """Record the content hash of the base file `key` names (at base_path, a temporary file
    about to take faiss_path's place, else faiss_path), by which a copy of the home (a new
    inode, hence a new key) finds its sidecars (`find`). Nothing when that file is gone or
    the hash is recorded already."""
    target = sum_path(faiss_path, key)
    if target.exists():
        return
    digest = _content_sum(base_path or faiss_path, key)
    if digest is None:
        return
    with replacing(target, ".faces.sum.") as fh:
        fh.write(f"{digest}\n".encode())


def find(faiss_path: Path, key: str) -> dict[str, Path]:
    """The sidecars ("ids", "vectors") written with the base file `key` names, by kind: under
    that key, else adopted from another key whose recorded content hash is the base file's
    (the home was copied or restored: same bytes, new inode): renamed to `key` (ids, vectors,
    then the hash, so a crash between leaves the hash for the next reader), or read where
    they are in a home this process cannot write to. A sidecar of a base with other content
    is never returned."""
    found = {kind: p for kind, p in (("ids", ids_path(faiss_path, key)),
                                     ("vectors", vectors_path(faiss_path, key))) if p.exists()}
    if "ids" in found and ("vectors" in found or sum_path(faiss_path, key).exists()):
        return found  # complete (a base that keeps no exact vectors has none)
    own = sum_path(faiss_path, key).name
    digest = None
    for other in sorted(faiss_path.parent.glob(f"{faiss_path.stem}.sum-*.txt")):
        if other.name == own:
            continue
        try:
            recorded = other.read_text().strip()
        except OSError:
            continue
        digest = digest or _content_sum(faiss_path, key)
        if digest is None:
            return found
        if recorded != digest:
            continue
        old_key = other.name[len(f"{faiss_path.stem}.sum-"):-len(".txt")]
        adopted: dict[str, Path] = {}
        for kind, path_of in (("ids", ids_path), ("vectors", vectors_path),
                              ("sum", sum_path)):
            old, new = path_of(faiss_path, old_key), path_of(faiss_path, key)
            if not old.exists():
                continue
            try:
                os.replace(old, new)
                adopted[kind] = new
            except OSError:  # a home this process cannot write to: read them where they are
                adopted[kind] = old
        log.info("FAISS index %s: adopted the sidecars of an identical base file (the home "
                 "was copied or restored)", faiss_path)
        adopted.pop("sum", None)
        return {**adopted, **found}
    return found


def drop_stale(faiss_path: Path) -> None:
    """Remove sidecars (ids, vectors, content hash) of base files that are gone."""
    key = file_key(faiss_path)
    keep = {ids_path(faiss_path, key).name, vectors_path(faiss_path, key).name,
            sum_path(faiss_path, key).name}
    for pattern in ("ids-*.npy", "vectors-*.npy", "sum-*.txt"):
        for old in faiss_path.parent.glob(f"{faiss_path.stem}.{pattern}"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
