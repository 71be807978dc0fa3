"""The search index a reader sees (`FaceIndex`: base minus removed ids, plus an exact index of
additions) and how a base index is built: exact below the IVF threshold, IVF above (by default
IVF with 4-bit fast-scan PQ codes, whose candidates are re-ranked on the exact vectors).

The store (`vectors.py`) owns the files; this module holds no paths, so benchmarks build and
search exactly what the store would (scripts/bench_search.py).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    from collections.abc import Iterator

    import numpy as np


log = logging.getLogger(__name__)

IVF_POINTS_PER_LIST = 40
"""Training sample per IVF list (faiss warns below 39)."""
SERIAL_QUERIES = 16
"""Fewer query faces than this are searched on one thread, but for a fast-scan base's lists
(PARALLEL_FAST_SCAN): OpenMP's threads cost more than they save for a few queries of an exact
scan (on a busy 2-core machine 13.6 ms of CPU per query face against 0.6 ms on one thread,
exact search over 10k faces)."""
SERIAL_FAST_SCAN = 11
"""FAISS fast-scan implementation for those few queries on one thread: 11 scans each list for
one query and keeps candidates in a reservoir; the default (13 for more than 20 candidates)
batches queries per list, which one query does not need (about a fifth less CPU per query face
at 1M faces, 1024 of 4096 lists probed; scripts/sweep_search.py)."""
PARALLEL_FAST_SCAN = 15
"""The same with more than one OpenMP thread: 15 shares one query's probed lists among the
threads, each keeping a reservoir, merged at the end. The exact parts of a search stay on one
thread, but a fast-scan base (above the IVF threshold) is milliseconds of work a query face,
which threads divide: at 1M faces, 1024 of 4096 lists probed, 3.08 ms a query face on
2 threads against 6.84 ms on one (implementation 11), the same results
(scripts/sweep_search.py --implem 11,15 --threads 1,2)."""
IVF_KINDS = ("pq", "flat", "sq8")
"""How an IVF base stores its vectors: `pq`, 4-bit product-quantizer codes scanned with SIMD
(fast-scan, half a byte per dimension) whose best candidates are re-ranked on the exact vectors
kept beside the base; `flat`, float32 as given; `sq8`, 8 bits per dimension.
scripts/bench_search.py measures them (README "Performance")."""
REFINED_KINDS = ("pq",)
"""Kinds whose candidates are re-ranked on exact vectors (FaceIndex `vectors`, `refine`)."""


class FaceIndex:
    """What a search sees: the base index minus removed ids, plus an exact index of additions."""

    def __init__(self, base: Any, base_ids: np.ndarray, dim: int, nprobe: int, *,
                 ids_sorted: bool = False, vectors: np.ndarray | None = None,
                 refine: int = 0) -> None:
        """`vectors`: the base's exact vectors, one row per id of the sorted `base_ids` (a
        memory map in a reader); with them the base's `refine` best candidates per query are
        re-ranked on exact inner products (for a base of compressed codes)."""
        import faiss
        import numpy as np

        self.base = base
        self.base_ids = base_ids if ids_sorted else np.sort(np.asarray(base_ids, np.int64))
        if vectors is not None and not ids_sorted:
            raise ValueError("vectors need base_ids sorted, one row per id")
        self.vectors = vectors
        self.refine = refine if vectors is not None else 0
        self._base_signature: tuple[int, int, int] | None = None
        self.dim = dim
        self.nprobe = nprobe
        self.removed: set[int] = set()
        self.added = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._added_ids: set[int] = set()

    @property
    def ntotal(self) -> int:
        return len(self.base_ids) - len(self.removed) + len(self._added_ids)

    @property
    def is_ivf(self) -> bool:
        return not hasattr(self.base, "id_map")

    def _in_base(self, ids: np.ndarray) -> np.ndarray:
        return rows_of(self.base_ids, ids)[1]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add faces; ids already present are skipped (replaying a log twice is harmless)."""
        import numpy as np

        ids = np.asarray(ids, dtype=np.int64)
        keep = ~self._in_base(ids) & np.asarray([i not in self._added_ids for i in ids.tolist()],
                                               dtype=bool)
        if keep.any():
            self.added.add_with_ids(np.ascontiguousarray(vectors[keep], dtype=np.float32),
                                    ids[keep])
            self._added_ids.update(ids[keep].tolist())

    def remove(self, ids: np.ndarray) -> None:
        import numpy as np

        ids = np.asarray(ids, dtype=np.int64)
        in_base = self._in_base(ids)
        self.removed.update(ids[in_base].tolist())
        extra = [i for i in ids[~in_base].tolist() if i in self._added_ids]
        if extra:
            self.added.remove_ids(np.asarray(extra, dtype=np.int64))
            self._added_ids.difference_update(extra)

    def ids(self) -> np.ndarray:
        import numpy as np

        base = self.base_ids
        if self.removed:
            base = base[~np.isin(base, np.fromiter(self.removed, np.int64, len(self.removed)))]
        added = np.fromiter(self._added_ids, np.int64, len(self._added_ids))
        return np.sort(np.concatenate([base, added]))

    def signature(self) -> tuple[int, int, int]:
        """(count, sum, xor) of the ids a search sees, from the base's (computed once) and the
        changes beside it: removed ids are base ids, added ones are not (see add, remove)."""
        import numpy as np

        if self._base_signature is None:
            self._base_signature = _signature(np.asarray(self.base_ids))
        count, total, xor = self._base_signature
        for ids, sign in ((self.removed, -1), (self._added_ids, 1)):
            if ids:
                arr = np.fromiter(ids, np.int64, len(ids))
                count += sign * len(arr)
                total += sign * int(arr.sum())
                xor ^= int(np.bitwise_xor.reduce(arr))
        return count, total, xor

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner products and ids of the k best faces per query (id -1 where fewer exist)."""
        import faiss
        import numpy as np

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(queries) >= SERIAL_QUERIES:
            return self._search(queries, k)
        threads = faiss.omp_get_max_threads()
        fast_scan = self._fast_scan()
        if fast_scan is not None:
            fast_scan.implem = PARALLEL_FAST_SCAN if threads > 1 else SERIAL_FAST_SCAN
        try:
            with omp_threads(1):
                return self._search(queries, k,
                                    base_threads=threads if fast_scan is not None else None)
        finally:
            if fast_scan is not None:
                fast_scan.implem = 0  # FAISS's own choice for a batch

    def _fast_scan(self) -> Any:
        """The base as a fast-scan IVF index (whose search implementation can be chosen), or
        None for another kind."""
        import faiss

        if not self.is_ivf:
            return None
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self.base))
        return ivf if isinstance(ivf, faiss.IndexIVFFastScan) else None

    def _search(self, queries: np.ndarray, k: int, base_threads: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """`base_threads`: OpenMP threads for the base's search alone (None: as they are)."""
        import faiss
        import numpy as np

        parts = []
        if len(self.base_ids) > len(self.removed):
            sel = None
            if self.removed:
                sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(
                    np.fromiter(self.removed, np.int64, len(self.removed))))
            params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=sel) if self.is_ivf \
                else (faiss.SearchParameters(sel=sel) if sel is not None else None)
            live = len(self.base_ids) - len(self.removed)
            fetch = min(max(k, self.refine), live) if self.refine else k
            with omp_threads(base_threads):
                sims, ids = self.base.search(queries, fetch, params=params)
            parts.append(self._rerank(queries, ids, k) if self.refine else (sims, ids))
        if self._added_ids:
            parts.append(self.added.search(queries, min(k, len(self._added_ids))))
        if not parts:
            return (np.full((len(queries), k), -np.inf, np.float32),
                    np.full((len(queries), k), -1, np.int64))
        sims = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        sims = np.where(ids < 0, -np.inf, sims)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)

    def _rerank(self, queries: np.ndarray, ids: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """The k best of the base's candidates by exact inner product on the stored vectors."""
        import numpy as np

        assert self.vectors is not None
        out_sims = np.full((len(queries), k), -np.inf, np.float32)
        out_ids = np.full((len(queries), k), -1, np.int64)
        step = 1024  # queries per chunk: candidate vectors of a chunk stay a few MB per query
        for s in range(0, len(queries), step):
            cand = ids[s:s + step]
            rows = rows_of(self.base_ids, cand)[0]  # -1 pads: a row masked out below
            vecs = np.asarray(self.vectors[rows.ravel()]).reshape(*cand.shape, self.dim)
            sims = np.einsum("qcd,qd->qc", vecs, queries[s:s + step])
            sims = np.where(cand < 0, -np.inf, sims).astype(np.float32)
            take = min(k, cand.shape[1])
            order = np.argsort(-sims, axis=1, kind="stable")[:, :take]
            out_sims[s:s + step, :take] = np.take_along_axis(sims, order, 1)
            out_ids[s:s + step, :take] = np.where(np.isinf(out_sims[s:s + step, :take]), -1,
                                                  np.take_along_axis(cand, order, 1))
        return out_sims, out_ids


@contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """FAISS's OpenMP threads set to n within the block (None: left as they are), then back."""
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _signature(ids: np.ndarray) -> tuple[int, int, int]:
    import numpy as np

    if len(ids) == 0:
        return 0, 0, 0
    return len(ids), int(ids.sum()), int(np.bitwise_xor.reduce(ids))


def rows_of(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `ids` sits in `sorted_ids` (a valid row even for an absent id), and
    whether it is there."""
    import numpy as np

    pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
    found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(np.shape(ids), bool)
    return pos, found


def refined(base: Any) -> bool:
    """Whether this base stores codes whose candidates are re-ranked on exact vectors kept
    beside it (REFINED_KINDS)."""
    return not hasattr(base, "id_map") and ivf_kind(base) in REFINED_KINDS


def _base_ids(index: Any) -> np.ndarray:
    import faiss
    import numpy as np

    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = faiss.extract_index_ivf(index).invlists
    parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
             for i in range(invlists.nlist) if invlists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def ivf_lists(n_faces: int) -> int:
    """IVF lists for n faces: a power of two near 4 sqrt(n) (4096 at 1M faces)."""
    return 1 << max(4, round(math.log2(4 * math.sqrt(max(n_faces, 1)))))


def _is_ivf(index: Any) -> bool:
    import faiss

    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def faiss_nlist(index: Any) -> int:
    import faiss

    return int(faiss.extract_index_ivf(index).nlist)


def ivf_kind(index: Any) -> str:
    """The IVF_KINDS name of an IVF base."""
    import faiss

    ivf = index if isinstance(index, faiss.IndexIVF) else faiss.extract_index_ivf(index)
    ivf = faiss.downcast_index(ivf)
    if isinstance(ivf, faiss.IndexIVFPQFastScan):
        return "pq"
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
        return "sq8"
    return "flat"


def pq_subquantizers(dim: int) -> int:
    """Fast-scan PQ sub-quantizers for dim: one per dimension up to 128 (64 bytes a face at
    128-d), one per two dimensions above (128 bytes at 512-d)."""
    return dim if dim <= 128 else max(128, dim // 2)


def build_base(ids: np.ndarray, vectors: np.ndarray, dim: int, nlist: int | None,
               kind: str = "flat") -> Any:
    """A base index of these faces: exact (an ID map over a flat inner-product index) when
    nlist is None, else IVF with nlist lists trained on a sample of them, storing vectors as
    `kind` (IVF_KINDS)."""
    import faiss

    if nlist is None:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if len(ids):
            index.add_with_ids(vectors, ids)
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT, False)
    elif kind == "pq":
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_subquantizers(dim)}x4fs",
                                    faiss.METRIC_INNER_PRODUCT)  # owns its quantizer
    elif kind == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown IVF kind {kind!r}; one of {', '.join(IVF_KINDS)}")
    return fill_ivf(index, ids, vectors, nlist, kind)


def fill_ivf(index: Any, ids: np.ndarray, vectors: np.ndarray, nlist: int, kind: str) -> Any:
    """Train the empty IVF `index` (nlist lists; `kind` names it in the log) on a fixed sample
    of these faces, at most IVF_POINTS_PER_LIST a list, then add them all with their ids."""
    import faiss
    import numpy as np

    faiss.extract_index_ivf(index).cp.max_points_per_centroid = IVF_POINTS_PER_LIST
    rng = np.random.default_rng(0)
    sample = vectors[np.sort(rng.choice(len(ids), min(len(ids), nlist * IVF_POINTS_PER_LIST),
                                        replace=False))]
    log.info("training IVF search index (%d lists, %s) on %d of %d faces", nlist, kind,
             len(sample), len(ids))
    index.train(sample)
    step = 200_000
    for start in range(0, len(ids), step):
        index.add_with_ids(vectors[start:start + step], ids[start:start + step])
    return index
