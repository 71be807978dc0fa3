"""A recluster's snapshot (indexer.store.snapshot): ids and corrections from one short read of
the catalog, vectors from the search index's files (the base's exact vectors and the delta
log), the rest from the catalog; and a writer in another process commits while a snapshot is
being read. Real DuckDB and FAISS files under tmp_path."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexer.settings import Settings
from indexer.store import ClusterSnapshot, NewImage, Store
from indexer.types import FaceResult, ModelInfo
from indexer.watch_recluster import CatalogClock

SMALL = ModelInfo(name="dlib", dim=16, weights="test")
TIMEOUT = 120.0


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, SMALL.dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write(store: Store, vectors: np.ndarray, prefix: str) -> list[int]:
    """One photo of two faces per pair of vectors, in one transaction (logged to the delta)."""
    faces = [FaceResult(bbox=(10.0, 10.0, 60.0, 60.0), landmarks=(0.0,) * 10, score=0.9,
                        embedding=v) for v in vectors]
    with store.transaction() as con:
        images = store.add_images(con, [NewImage(path=f"/lib/{prefix}{i}.jpg", size=1,
                                                 mtime=1.0, content_hash=f"{prefix}{i}",
                                                 status="ok") for i in range(len(faces) // 2)])
        return store.add_faces_many(con, [(img, faces[2 * i:2 * i + 2])
                                          for i, img in enumerate(images)])


def _pq(settings: Settings) -> Settings:
    """An IVF base of PQ codes (exact vectors kept beside it) from 100 faces on; no folding of
    the log into the base."""
    return replace(settings, faiss_ivf_min_faces=100, faiss_ivf_kind="pq", faiss_nprobe=16,
                   faiss_delta_max=100_000)


def _base_then_log(settings: Settings) -> tuple[list[int], list[int]]:
    """400 faces in the base (built by a rebuild), then 40 more in the delta log."""
    with Store.open(settings, SMALL) as store:
        first = _write(store, _unit(400, 0), "a")
    with Store.open(settings, SMALL) as store:
        store._faiss = None
        assert store.rebuild_faiss_if_unfit() or store.faiss_index().vectors is not None
    with Store.open(settings, SMALL) as store:
        later = _write(store, _unit(40, 1), "b")
    return first, later


def _snapshot_and_truth(store: Store) -> tuple[ClusterSnapshot, int, np.ndarray, np.ndarray]:
    """With the catalog released, as the recluster child has it: the snapshot, how many times
    taking it held the catalog, and every face's id and vector as the catalog has them."""
    store.release()
    clock = CatalogClock(store)
    snap = store.cluster_snapshot()
    holds = clock.holds
    return (snap, holds, *store.embeddings())


def test_the_vectors_come_from_the_index_files_in_one_short_hold(settings: Settings) -> None:
    pq = _pq(settings)
    first, later = _base_then_log(pq)
    assert sorted(pq.home.glob("faces.vectors-*.npy")), "no exact vectors beside the base"
    assert pq.faiss_path.with_suffix(".delta").stat().st_size > 0, "nothing in the delta log"
    with Store.open(pq) as store:
        snap, holds, ids, vectors = _snapshot_and_truth(store)
    assert holds == 1, f"the snapshot held the catalog {holds} times (vectors read from it?)"
    assert snap.face_ids.tolist() == ids.tolist() == first + later
    assert snap.vectors.dtype == np.float32 and snap.vectors.flags.c_contiguous
    assert np.array_equal(snap.vectors, vectors), "a vector is not its face's"


def test_faces_missing_from_the_files_are_read_from_the_catalog(settings: Settings) -> None:
    """A batch committed but not logged (the log lost), and a photo deleted since the base was
    written: the snapshot holds every face there is, each with its own vector."""
    pq = _pq(settings)
    first, later = _base_then_log(pq)
    pq.faiss_path.with_suffix(".delta").unlink()  # as if killed between commit and log
    with Store.open(pq) as store:
        victim = store.faces()[0]
        with store.transaction() as con:
            store.remove_images(con, [victim.image_id])
        snap, holds, ids, vectors = _snapshot_and_truth(store)
    assert victim.face_id not in snap.face_ids.tolist()
    assert snap.face_ids.tolist() == ids.tolist()
    assert set(later) <= set(snap.face_ids.tolist()), "faces only in the catalog were lost"
    assert np.array_equal(snap.vectors, vectors)
    assert len(snap.previous) == len(snap.image_ids) == len(snap.face_ids)
    assert holds == 2, "the catalog's vectors were not read in one more short hold"


def test_an_exact_base_reads_its_vectors_from_the_catalog_in_chunks(settings: Settings,
                                                                    monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    """Below the IVF threshold the base keeps no exact vectors beside it: all come from the
    catalog, in chunks that each hold it briefly."""
    from indexer.store import snapshot

    exact = replace(settings, faiss_ivf_min_faces=10_000)
    with Store.open(exact, SMALL) as store:
        _write(store, _unit(120, 2), "c")
    monkeypatch.setattr(snapshot, "CATALOG_CHUNK", 50)
    monkeypatch.setattr(snapshot, "CATALOG_PAUSE", 0.0)
    with Store.open(exact) as store:
        snap, holds, ids, vectors = _snapshot_and_truth(store)
    assert np.array_equal(snap.face_ids, ids) and np.array_equal(snap.vectors, vectors)
    assert holds == 1 + 3, f"120 vectors in chunks of 50 took {holds - 1} reads"


GATE, AT_GATE = "snapshot.gate-open", "snapshot.at-gate"


def _snapshot_in_child(settings: Settings, out: str) -> None:
    """In a spawned process: read a snapshot, waiting at a gate between its catalog read and
    its vectors read; save what it read."""
    from indexer.store import snapshot

    real = snapshot.index_file_vectors

    def gated(*args: object, **kwargs: object) -> np.ndarray:
        (settings.home / AT_GATE).touch()
        deadline = time.monotonic() + TIMEOUT
        while not (settings.home / GATE).exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    snapshot.index_file_vectors = gated  # type: ignore[assignment]
    with Store.open(settings) as store:
        snap = store.cluster_snapshot()
    np.savez(out, ids=snap.face_ids, vectors=snap.vectors)


def test_a_writer_commits_while_another_process_reads_a_snapshot(settings: Settings,
                                                                  tmp_path: Path) -> None:
    """The catalog is free while the snapshot reads its vectors: this process writes a batch
    and deletes two photos meanwhile (with a lock timeout far below the gate's wait). The
    snapshot holds the faces of its moment, each with its own vector, less a face deleted
    meanwhile whose vector only the catalog had (the log lost); one whose vector the base
    keeps stays (the recluster's write step finds it gone)."""
    pq = replace(_pq(settings), lock_timeout=10.0)
    first, later = _base_then_log(pq)
    pq.faiss_path.with_suffix(".delta").unlink()  # `later` only in the catalog
    with Store.open(pq) as store:
        before = dict(zip(*store.embeddings(), strict=True))
        faces = {f.face_id: f for f in store.faces()}
    in_base, in_catalog = faces[first[10]], faces[later[-1]]
    out = tmp_path / "snap.npz"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_snapshot_in_child, args=(pq, str(out)))
    child.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (pq.home / AT_GATE).exists():
            assert child.is_alive() and time.monotonic() < deadline, "no snapshot started"
            time.sleep(0.05)
        with Store.open(pq) as store:  # waits at most lock_timeout for the catalog
            added = _write(store, _unit(6, 3), "d")
            with store.transaction() as con:
                store.remove_images(con, [in_base.image_id, in_catalog.image_id])
        assert child.is_alive(), "the snapshot did not wait at its gate"
        (pq.home / GATE).touch()
        child.join(TIMEOUT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    got = np.load(out)
    gone = {f.face_id for f in faces.values() if f.image_id == in_catalog.image_id}
    assert got["ids"].tolist() == [f for f in first + later if f not in gone]
    assert in_base.face_id in got["ids"].tolist()
    assert not set(added) & set(got["ids"].tolist()), "a face added meanwhile is in it"
    assert np.array_equal(got["vectors"], np.stack([before[f] for f in got["ids"].tolist()]))


def _resident_kb(path_part: str) -> int:
    """KB of this process's mappings of files whose path holds `path_part` that are resident."""
    total, name = 0, ""
    with open("/proc/self/smaps") as fh:
        for line in fh:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                name = fields[5] if len(fields) > 5 else ""
            elif line.startswith("Rss:") and path_part in name:
                total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc")
def test_a_writer_gives_back_the_exact_vectors_its_searches_mapped(settings: Settings) -> None:
    """The watch daemon searches the base (people founded online) after each batch; the pages of
    the exact vectors' file those searches mapped leave its memory when it asks."""
    pq = _pq(settings)
    _base_then_log(replace(pq, faiss_ivf_min_faces=100))
    with Store.open(pq) as store:
        queries = _unit(40, 9)
        store.nearest_face_ids(queries, 10)
        touched = _resident_kb("faces.vectors-")
        store.drop_mapped_pages()
        after = _resident_kb("faces.vectors-")
        assert store.nearest_face_ids(queries, 10).shape == (40, 10), "search broken after"
    assert touched > 0, "the searches mapped none of the exact vectors"
    assert after == 0, f"{after} KB of the exact vectors still mapped"
