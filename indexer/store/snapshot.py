"""A recluster's snapshot, read so that the catalog is held for about a second at 1M faces.

The catalog gives, in one short read transaction, the face ids with their cluster and photo
ids and the user's corrections (a few int64 columns: 0.7 s at 1M faces on a loaded 2-core
machine). It is then released, and the vectors of those ids come from the search index's
files, which a writer keeps beside the catalog (vectors.py): the base's sidecar of exact
vectors (rows in its sorted id order, read in chunks with plain reads, so its pages never count
in this process's memory) and the delta log's added vectors. A face's vector never changes
while the face exists and face ids are never reused, so a vector found under an id in any of
these files is that face's vector, whenever the file was written. Ids found in neither (a
batch committed but not yet logged, a base without a sidecar of exact vectors) are read from
the catalog by id, in chunks that each hold it briefly. A face the catalog no longer holds by
then was deleted after the snapshot: it is left out of the snapshot (a base written meanwhile
holds zeros for such a face, which is also left out), and the recluster's write step finds the
catalog as it is then, as for any face deleted meanwhile.

Reading 1M vectors from the catalog's blobs instead held it for about two minutes on a loaded
machine (the watch daemon could not index meanwhile) and left ~1 GB of freed blob objects in
the recluster process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import delta as delta_log
from .bulkrows import ClusterSnapshot

if TYPE_CHECKING:
    import numpy as np

    from . import Store

log = logging.getLogger(__name__)

CATALOG_CHUNK = 50_000
"""Vectors read from the catalog per short read (the catalog is released between two)."""
CATALOG_PAUSE = 0.6
"""Seconds between two such reads: longer than a waiting writer's longest retry delay
(base.py), so the watch daemon gets the catalog in between."""
FILE_CHUNK = 65_536
"""Rows of the sidecar read at a time (32 MB at 128-d)."""


def read_cluster_snapshot(store: Store) -> ClusterSnapshot:
    """Every face's id, previous cluster, photo and vector, and the corrections, for a
    recluster (see the module's docstring for what holds the catalog and for how long)."""
    import numpy as np

    t0 = time.perf_counter()
    with store.snapshot():
        con = store._connect()
        res = con.execute("SELECT face_id, coalesce(cluster_id, -1) AS cluster_id, image_id "
                          "FROM faces ORDER BY face_id").fetchnumpy()
        state = store._cluster_corrections(con)
    store.release()
    held = time.perf_counter() - t0
    ids = np.asarray(res["face_id"], dtype=np.int64)
    previous = np.asarray(res["cluster_id"], dtype=np.int64)
    image_ids = np.asarray(res["image_id"], dtype=np.int64)
    del res
    dim = store.model.dim
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    found = index_file_vectors(store.settings.faiss_path, dim, ids, vectors)
    from_files = int(found.sum())
    held += _catalog_vectors(store, ids, vectors, found)
    if not found.all():  # deleted since the snapshot: the write step sees them gone
        log.info("snapshot: %d face(s) deleted while it was read", int((~found).sum()))
        ids, previous, image_ids = ids[found], previous[found], image_ids[found]
        vectors = vectors[found]
    log.info("snapshot of %d faces (%d vectors from the search index's files) read in %.1f s; "
             "the catalog held %.1f s of it", len(ids), from_files, time.perf_counter() - t0,
             held)
    return ClusterSnapshot(face_ids=ids, vectors=vectors, previous=previous, named=state.named,
                           pins=state.pins, rejected=state.rejected, image_ids=image_ids,
                           next_cluster_id=state.next_cluster_id, generation=state.generation)


def index_file_vectors(faiss_path: Path, dim: int, ids: np.ndarray,
                       out: np.ndarray) -> np.ndarray:
    """Fill rows of `out` with the vectors of the sorted `ids` that the search index's files
    hold (the base's sidecar of exact vectors, then the delta log's additions); returns which
    rows were filled. Never raises for a missing, replaced or torn file: what cannot be read
    is left for the catalog."""
    import numpy as np

    found = np.zeros(len(ids), dtype=bool)
    if len(ids) == 0:
        return found
    try:
        _from_sidecar(faiss_path, dim, ids, out, found)
    except (OSError, ValueError) as exc:
        log.info("snapshot: the search index's exact vectors are unreadable (%s); reading "
                 "them from the catalog", exc)
        found[:] = False
    try:
        replay = delta_log.replay(faiss_path.with_suffix(".delta"), dim)
    except (OSError, ValueError):
        return found
    if replay.added:
        added = np.fromiter(replay.added.keys(), np.int64, len(replay.added))
        pos = np.minimum(np.searchsorted(ids, added), len(ids) - 1)
        hit = ids[pos] == added
        for row, face in zip(pos[hit].tolist(), added[hit].tolist(), strict=True):
            out[row] = replay.added[face]
            found[row] = True
    found &= np.einsum("ij,ij->i", out, out) > 0  # a base writes zeros for a face gone
    return found


def _from_sidecar(faiss_path: Path, dim: int, ids: np.ndarray, out: np.ndarray,
                  found: np.ndarray) -> None:
    """The base's exact vectors of `ids`, read chunk by chunk (no memory map: its pages would
    count in this process's RSS beside the copy)."""
    import numpy as np

    from . import sidecars

    paths = sidecars.find(faiss_path, sidecars.file_key(faiss_path))  # a copied home's too
    if "ids" not in paths or "vectors" not in paths:
        return  # none, or a base that keeps no exact vectors (exact or IVF-Flat search)
    try:  # open both first: a writer replacing the base meanwhile unlinks them afterwards
        ids_fh = open(paths["ids"], "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    try:
        try:
            vec_fh = open(paths["vectors"], "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with vec_fh:
            base_ids = np.load(ids_fh)
            shape, offset = _npy_header(vec_fh)
            if shape != (len(base_ids), dim):
                raise ValueError(f"sidecar of shape {shape} for {len(base_ids)} ids")
            pos = np.minimum(np.searchsorted(base_ids, ids), max(len(base_ids) - 1, 0))
            hit = (base_ids[pos] == ids) if len(base_ids) else np.zeros(len(ids), bool)
            rows = np.flatnonzero(hit)
            want = pos[rows]  # ascending: both id lists are sorted
            row_bytes = 4 * dim
            buf = np.empty((FILE_CHUNK, dim), dtype=np.float32)
            start_i = 0
            while start_i < len(want):
                first = int(want[start_i])
                end_i = int(np.searchsorted(want, first + FILE_CHUNK))
                span = int(want[end_i - 1]) - first + 1
                vec_fh.seek(offset + first * row_bytes)
                view = buf[:span]
                if vec_fh.readinto(memoryview(view).cast("B")) != span * row_bytes:
                    raise ValueError("sidecar shorter than its header says")
                out[rows[start_i:end_i]] = view[want[start_i:end_i] - first]
                start_i = end_i
            found[rows] = True
    finally:
        ids_fh.close()


def _npy_header(fh: object) -> tuple[tuple[int, ...], int]:
    """Shape and data offset of a float32, C-ordered .npy file."""
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(fh)
    reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = reader(fh)
    if fortran or np.dtype(dtype) != np.float32:
        raise ValueError(f"sidecar of dtype {dtype} (fortran order {fortran})")
    return tuple(shape), fh.tell()  # type: ignore[attr-defined]


def _catalog_vectors(store: Store, ids: np.ndarray, out: np.ndarray,
                     found: np.ndarray) -> float:
    """Read the vectors still missing from the catalog by id, CATALOG_CHUNK at a time, each
    chunk in its own short read with a pause between two; marks those found. Returns the
    seconds the catalog was held."""
    import numpy as np

    missing = np.flatnonzero(~found)
    if len(missing) == 0:
        return 0.0
    log.info("snapshot: reading %d vector(s) from the catalog", len(missing))
    held = 0.0
    dim = out.shape[1]
    for start in range(0, len(missing), CATALOG_CHUNK):
        if start:
            time.sleep(CATALOG_PAUSE)
        rows = missing[start:start + CATALOG_CHUNK]
        want = ids[rows]
        t0 = time.perf_counter()
        try:
            with store._read() as con:
                res = con.execute(
                    "SELECT face_id, embedding FROM faces WHERE face_id BETWEEN ? AND ? "
                    "AND face_id IN (SELECT unnest(?)) ORDER BY face_id",
                    [int(want[0]), int(want[-1]), want.tolist()]).fetchnumpy()
        finally:
            store.release()
            held += time.perf_counter() - t0
        got = np.asarray(res["face_id"], dtype=np.int64)
        if len(got) == 0:
            continue
        at = rows[np.searchsorted(want, got)]
        out[at] = np.frombuffer(b"".join(res["embedding"]), dtype=np.float32).reshape(-1, dim)
        found[at] = True
    return held


__all__ = ["index_file_vectors", "read_cluster_snapshot"]
