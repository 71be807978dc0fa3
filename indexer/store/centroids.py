"""Cluster centroids, read through a cache file beside the catalog.

`query` judges each face against every person's centre, and the daemon's assigner and the web
app read them all too: at 1M faces that is about 99k centroids, and reading their BLOBs out
of DuckDB took most of `query`'s own time. The catalog stays the truth: `centroids.npz` in the
home holds the last set read, with the signature of the clusters it was read from (the count
and a sum of hashes of every live cluster's id, size and centroid, which DuckDB computes
without handing the BLOBs to Python). A reader computes the signature, and uses the file only
when it matches; otherwise it reads the catalog and writes the file again (atomically, like
the FAISS files; skipped where the home cannot be written). Any change to a cluster, by any
writer, changes the signature, so no writer has to remember the cache.

The cache is two files: `centroids.npz`, small (the signature, the ids, sizes and centroid
norms, and the name of the other file), and `centroids-<digest>.npy`, the centroids themselves
(float32, one row per id), which a reader maps rather than reads: judging one query face against
every centre reads it once from the page cache, with no copy. The matrix is written first, named
after the signature it holds, and the small file last, so a reader that finds the small file
finds the matrix it names (a stale one is never named by a current small file).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .files import replacing

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np


log = logging.getLogger(__name__)

LIVE = "FROM clusters WHERE size > 0 AND centroid IS NOT NULL"
CACHE_NAME = "centroids.npz"
MATRIX_GLOB = "centroids-*.npy"


class CentroidsMixin:
    @property
    def _centroids_path(self) -> Path:
        return self.settings.home / CACHE_NAME

    def centroids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster ids, their centroids (mean member vectors; read-only, possibly a memory
        map) and sizes, for assignment."""
        ids, centroids, sizes, _ = self.centroids_and_norms()
        return ids, centroids, sizes

    def centroids_and_norms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """centroids() and each centroid's L2 norm (cosine to every centre without a
        normalised copy of them all)."""
        import numpy as np

        dim = self.model.dim
        with self._read() as con:
            row = con.execute(f"SELECT count(*), coalesce(sum(hash(cluster_id, size, centroid)), "
                              f"0)::VARCHAR {LIVE}").fetchone()
            assert row is not None
            signature = f"{int(row[0])}:{row[1]}:{dim}"
            if int(row[0]) == 0:
                return (np.zeros(0, np.int64), np.zeros((0, dim), np.float32),
                        np.zeros(0, np.int64), np.zeros(0, np.float32))
            cached = self._cached_centroids(signature, dim)
            if cached is not None:
                return cached
            result = con.execute(f"SELECT cluster_id, centroid, size {LIVE} "
                                 "ORDER BY cluster_id").fetchnumpy()
        ids = np.asarray(result["cluster_id"], dtype=np.int64)
        vectors = np.frombuffer(b"".join(result["centroid"]), dtype=np.float32)
        vectors = vectors.reshape(len(ids), dim)
        sizes = np.asarray(result["size"], np.int64)
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors)).astype(np.float32)
        self._write_centroids(signature, ids, vectors, sizes, norms)
        return ids, vectors, sizes, norms

    def _cached_centroids(self, signature: str, dim: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        import numpy as np

        try:
            with np.load(self._centroids_path) as data:
                if str(data["signature"]) != signature:
                    return None
                ids, sizes, norms = data["ids"], data["sizes"], data["norms"]
                matrix = self.settings.home / str(data["matrix"])
            centroids = np.load(matrix, mmap_mode="r")
        except (OSError, ValueError, KeyError):
            return None
        if centroids.dtype != np.float32 or centroids.shape != (len(ids), dim):
            return None
        return ids, centroids, sizes, norms

    def _write_centroids(self, signature: str, ids: np.ndarray, centroids: np.ndarray,
                         sizes: np.ndarray, norms: np.ndarray) -> None:
        import hashlib

        import numpy as np

        path = self._centroids_path
        digest = hashlib.blake2b(signature.encode(), digest_size=8).hexdigest()
        matrix = path.with_name(MATRIX_GLOB.replace("*", digest))
        try:
            with replacing(matrix, ".centroids.") as fh:
                np.save(fh, np.ascontiguousarray(centroids, dtype=np.float32))
            with replacing(path, ".centroids.") as fh:
                np.savez(fh, signature=np.asarray(signature), ids=ids, sizes=sizes, norms=norms,
                         matrix=np.asarray(matrix.name))
        except OSError as exc:
            log.info("could not cache the centroids in %s (%s)", path.parent, exc)
            return
        for old in path.parent.glob(MATRIX_GLOB):
            if old.name != matrix.name:  # a reader mapping it keeps its pages (where the
                with contextlib.suppress(OSError):  # system refuses, a later write drops it)
                    old.unlink(missing_ok=True)
