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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .files import replacing

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np


log = logging.getLogger(__name__)

LIVE = "FROM clusters WHERE size > 0 AND centroid IS NOT NULL"
CACHE_NAME = "centroids.npz"


class CentroidsMixin:
    @property
    def _centroids_path(self) -> Path:
        return self.settings.home / CACHE_NAME

    def centroids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster ids, their centroids (mean member vectors) and sizes, for assignment."""
        import numpy as np

        dim = self.model.dim
        with self._read() as con:
            row = con.execute(f"SELECT count(*), coalesce(sum(hash(cluster_id, size, centroid)), "
                              f"0)::VARCHAR {LIVE}").fetchone()
            assert row is not None
            signature = f"{int(row[0])}:{row[1]}:{dim}"
            if int(row[0]) == 0:
                return (np.zeros(0, np.int64), np.zeros((0, dim), np.float32),
                        np.zeros(0, np.int64))
            cached = self._cached_centroids(signature)
            if cached is not None:
                return cached
            result = con.execute(f"SELECT cluster_id, centroid, size {LIVE} "
                                 "ORDER BY cluster_id").fetchnumpy()
        ids = np.asarray(result["cluster_id"], dtype=np.int64)
        vectors = np.frombuffer(b"".join(result["centroid"]), dtype=np.float32)
        out = ids, vectors.reshape(len(ids), dim).copy(), np.asarray(result["size"], np.int64)
        self._write_centroids(signature, *out)
        return out

    def _cached_centroids(self, signature: str
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        import numpy as np

        try:
            with np.load(self._centroids_path) as data:
                if str(data["signature"]) != signature:
                    return None
                return data["ids"], data["centroids"], data["sizes"]
        except (OSError, ValueError, KeyError):
            return None

    def _write_centroids(self, signature: str, ids: np.ndarray, centroids: np.ndarray,
                         sizes: np.ndarray) -> None:
        import numpy as np

        path = self._centroids_path
        try:
            with replacing(path, ".centroids.") as fh:
                np.savez(fh, signature=np.asarray(signature), ids=ids, centroids=centroids,
                         sizes=sizes)
        except OSError as exc:
            log.info("could not cache the centroids in %s (%s)", path.parent, exc)
