"""The FAISS delta log: face ids added (with their vectors) and removed since the base file.

Each committed batch appends one record per kind in a single write, so persisting a batch costs
O(batch), never O(index). A record is a header (magic, kind, count, dimension), the ids, the
vectors for an add, and a CRC32 of all that. Readers stop at the first incomplete or corrupt
record (a writer killed mid-append); the next writer cuts such a tail off before appending.
Losing a tail is harmless: the catalog is the truth and readers repair what the log lacks.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np


_MAGIC = b"FXD1"
_HEADER = struct.Struct("<4sBII")  # magic, kind, count, dim
_CRC = struct.Struct("<I")
ADD, REMOVE = 1, 2


@dataclass
class DeltaReplay:
    """The log folded up: ids added (latest vector each) and ids removed, in log order."""

    added: dict[int, np.ndarray] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    records: int = 0
    valid_bytes: int = 0
    faces: int = 0  # ids the log carries, counted per record (what compaction is judged by)


def encode(kind: int, ids: np.ndarray, vectors: np.ndarray | None, dim: int) -> bytes:
    import numpy as np

    ids = np.ascontiguousarray(ids, dtype="<i8")
    payload = _HEADER.pack(_MAGIC, kind, len(ids), dim) + ids.tobytes()
    if kind == ADD:
        assert vectors is not None and vectors.shape == (len(ids), dim)
        payload += np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    return payload + _CRC.pack(zlib.crc32(payload))


def append(path: Path, records: list[bytes], *, valid_bytes: int | None = None) -> None:
    """Append records in one write (cutting a torn tail first when `valid_bytes` says so)."""
    if not records:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if valid_bytes is not None and os.fstat(fd).st_size > valid_bytes:
            os.ftruncate(fd, valid_bytes)
        os.write(fd, b"".join(records))
    finally:
        os.close(fd)


def replay(path: Path, dim: int) -> DeltaReplay:
    """Read the log up to its last whole record and fold it."""
    import numpy as np

    out = DeltaReplay()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, kind, count, rec_dim = _HEADER.unpack_from(data, pos)
        if magic != _MAGIC or kind not in (ADD, REMOVE) or rec_dim != dim:
            break
        body = _HEADER.size + 8 * count + (4 * count * dim if kind == ADD else 0)
        end = pos + body + _CRC.size
        if end > len(data) or _CRC.unpack_from(data, pos + body)[0] != \
                zlib.crc32(data[pos:pos + body]):
            break
        ids = np.frombuffer(data, dtype="<i8", count=count, offset=pos + _HEADER.size)
        if kind == ADD:
            vectors = np.frombuffer(data, dtype="<f4", count=count * dim,
                                    offset=pos + _HEADER.size + 8 * count).reshape(count, dim)
            for face_id, vec in zip(ids.tolist(), vectors, strict=True):
                out.added[face_id] = vec
                out.removed.discard(face_id)
        else:
            for face_id in ids.tolist():
                if out.added.pop(face_id, None) is None:
                    out.removed.add(face_id)
        out.records += 1
        out.faces += count
        pos = end
    out.valid_bytes = pos
    return out


def reset(path: Path) -> None:
    """Start an empty log (after its contents went into a new base file)."""
    tmp = path.with_suffix(".delta.tmp")
    tmp.write_bytes(b"")
    os.replace(tmp, path)
