"""The FAISS search index at scale: IVF recall on real LFW dlib embeddings, deletions and moves
through the base + delta-log index, and crash safety of its O(batch) persistence (SIGKILL)."""

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexer.imageio import decode
from indexer.settings import Settings
from indexer.store import NewImage, Store
from indexer.store.vectors import FaceIndex, ivf_lists, persisted_ids
from indexer.types import FaceResult, ModelInfo
from tests.conftest import lfw_identities

REPO = Path(__file__).resolve().parent.parent
DLIB = ModelInfo(name="dlib", dim=128, weights="dlib_face_recognition_resnet_model_v1")
SMALL = ModelInfo(name="dlib", dim=16, weights="test")


@pytest.fixture(scope="module")
def lfw_vectors(faces_dir: Path, dlib_model) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Real dlib embeddings of 150 LFW photos (25 people with at least 6 photos each)."""
    people = lfw_identities(faces_dir, min_images=6, count=25)
    files = [f for fs in people.values() for f in fs[:6]]
    images = [decode(f, max_pixels=10**8, max_bytes=10**8) for f in files]
    found = dlib_model.analyze(images)
    vectors = [faces[0].embedding for faces in found if faces]
    assert len(vectors) > 130
    return np.stack(vectors).astype(np.float32)


def _faces(vectors: np.ndarray) -> list[FaceResult]:
    return [FaceResult(bbox=(10.0, 10.0, 60.0, 60.0), landmarks=(0.0,) * 10, score=0.9,
                       embedding=v) for v in vectors]


def _write(store: Store, vectors: np.ndarray, per_image: int = 1,
           prefix: str = "/lib/p") -> list[int]:
    n_images = len(vectors) // per_image
    with store.transaction() as con:
        image_ids = store.add_images(con, [NewImage(path=f"{prefix}{i}.jpg", size=1,
                                                    mtime=1.0, content_hash=f"{prefix}{i}",
                                                    status="ok") for i in range(n_images)])
        faces = _faces(vectors)
        return store.add_faces_many(con, [(image_ids[i], faces[i * per_image:(i + 1) * per_image])
                                          for i in range(n_images)])


def test_ivf_recall_on_real_lfw_embeddings(settings: Settings, lfw_vectors: np.ndarray) -> None:
    """IVF (forced at this size, PQ codes re-ranked as by default) against exact search on real
    embeddings, probing a quarter of the lists, as the 1M-face setting does (1024 of 4096
    lists); README gives its measured recall."""
    ivf = replace(settings, faiss_ivf_min_faces=1, faiss_nprobe=ivf_lists(len(lfw_vectors)) // 4)
    with Store.open(ivf, DLIB) as store:
        ids = _write(store, lfw_vectors)
    with Store.open(ivf, read_only=True) as store:
        index = store.faiss_index()
        assert index.is_ivf and index.ntotal == len(ids)
        _, got = index.search(lfw_vectors, 10)
    exact = np.argsort(-(lfw_vectors @ lfw_vectors.T), axis=1)[:, :10]
    truth = np.asarray(ids)[exact]
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)])
    assert recall >= 0.98, f"recall@10 {recall:.3f}"


def test_one_query_face_shares_its_lists_among_threads(settings: Settings,
                                                       lfw_vectors: np.ndarray) -> None:
    """A query face alone, on a fast-scan base: its probed lists are shared among OpenMP
    threads (faceindex.PARALLEL_FAST_SCAN), and it finds what one thread finds, what a batch of
    queries finds, and never a deleted face."""
    import faiss

    ivf = replace(settings, faiss_ivf_min_faces=1, faiss_ivf_kind="pq", faiss_delta_max=10**6,
                  faiss_nprobe=ivf_lists(len(lfw_vectors)) // 4)
    with Store.open(ivf, DLIB) as store:
        ids = _write(store, lfw_vectors)
        with store.transaction() as con:
            store.remove_images(con, [face.image_id for face in store.faces(ids[:5])])
    queries = lfw_vectors[:40]
    threads = faiss.omp_get_max_threads()
    try:
        with Store.open(ivf, read_only=True) as store:
            index = store.faiss_index()
            assert index._fast_scan() is not None and index.removed
            _, batch = index.search(np.repeat(queries, 2, axis=0), 10)  # above SERIAL_QUERIES
            found = {}
            for n in (2, 1):
                faiss.omp_set_num_threads(n)
                found[n] = np.concatenate([index.search(q[None, :], 10)[1] for q in queries])
                assert faiss.omp_get_max_threads() == n  # restored after each search
    finally:
        faiss.omp_set_num_threads(threads)
    np.testing.assert_array_equal(found[2], found[1])
    np.testing.assert_array_equal(found[2], batch[::2])
    assert not np.isin(found[2], ids[:5]).any()
    assert (found[2][5:, 0] == np.asarray(ids)[5:40]).all()  # each finds itself first


@pytest.mark.parametrize("delta_max", [0, 10_000])  # fold every batch into the base, or log
def test_deletions_and_moves_go_through_the_index(settings: Settings, delta_max: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ivf = replace(settings, faiss_ivf_min_faces=100, faiss_nprobe=64, faiss_delta_max=delta_max)
    with Store.open(ivf, SMALL) as store:
        ids = _write(store, vectors[:300], per_image=3)
    with Store.open(ivf, SMALL) as store:
        _write(store, vectors[300:], per_image=2, prefix="/lib/q")
        gone = store.faces([ids[0]])[0].image_id
        moved = store.faces([ids[3]])[0].image_id
        with store.transaction() as con:
            store.remove_images(con, [gone])
            store.move_image(con, moved, "/lib/moved/x.jpg", size=1, mtime=2.0)
    assert persisted_ids(ivf.faiss_path, 16).tolist() == \
        sorted(set(range(1, 401)) - set(ids[:3]))
    with Store.open(ivf, read_only=True) as store:
        index = store.faiss_index()
        assert index.is_ivf and index.ntotal == 397
        hits = store.search(vectors[:6], k=3)
    assert all(m.face_id not in ids[:3] for row in hits for m in row)  # deleted: never found
    assert hits[3][0].face_id == ids[3] and hits[3][0].path == "/lib/moved/x.jpg"
    assert hits[5][0].face_id == ids[5] and hits[5][0].distance < 1e-3


def test_face_index_replay_is_idempotent() -> None:
    import faiss

    base = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    vecs = np.eye(4, dtype=np.float32)
    base.add_with_ids(vecs[:2], np.array([1, 2]))
    view = FaceIndex(base, np.array([1, 2]), 4, 1)
    for _ in range(2):  # a log replayed onto a base that already holds part of it
        view.add(np.array([2, 3]), vecs[1:3])
        view.remove(np.array([1]))
    assert view.ids().tolist() == [2, 3] and view.ntotal == 2
    _, ids = view.search(vecs, 2)
    assert ids[0].tolist() == [2, 3] or set(ids[0].tolist()) == {2, 3}
    assert ids[2][0] == 3


KILLER = """
import os, signal, sys
import numpy as np
from indexer import settings as settings_mod
from indexer.store import NewImage, Store, delta
from indexer.types import FaceResult, ModelInfo

home, mode = sys.argv[1], sys.argv[2]
settings = settings_mod.load({"home": home})
vectors = np.random.default_rng(7).normal(size=(5, 16)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
real_append = delta.append

def die(path, records, **kw):
    if mode == "torn":  # half of the record reaches the file
        with open(path, "ab") as fh:
            fh.write(b"".join(records)[: len(b"".join(records)) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

delta.append = die
store = Store.open(settings, ModelInfo(name="dlib", dim=16, weights="test"))
with store.transaction() as con:
    (image_id,) = store.add_images(con, [NewImage(path="/lib/late.jpg", size=1, mtime=1.0,
                                                  content_hash="late", status="ok")])
    store.add_faces(con, image_id, [FaceResult(bbox=(0.0, 0.0, 9.0, 9.0), landmarks=(0.0,) * 10,
                                               score=0.9, embedding=v) for v in vectors])
print("not killed")
"""


@pytest.mark.parametrize("mode", ["before_write", "torn"])
def test_sigkill_between_a_batch_and_its_index_write(settings: Settings, mode: str) -> None:
    rng = np.random.default_rng(1)
    first = rng.normal(size=(20, 16)).astype(np.float32)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    with Store.open(settings, SMALL) as store:
        _write(store, first)
    with Store.open(settings, SMALL) as store:  # one logged batch, so the log has a record
        _write(store, first[:2] * -1.0, prefix="/lib/neg")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", KILLER, str(settings.home), mode], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    late = np.random.default_rng(7).normal(size=(5, 16)).astype(np.float32)
    late /= np.linalg.norm(late, axis=1, keepdims=True)
    assert len(persisted_ids(settings.faiss_path, 16)) == 22  # the files lack the late batch
    with Store.open(settings, read_only=True) as store:  # a reader: right results anyway
        hits = store.search(late, k=1)
        assert [h[0].path for h in hits] == ["/lib/late.jpg"] * 5
        assert store.faiss_index().ntotal == 27
    with Store.open(settings, SMALL) as store:  # the next writer repairs the files
        _write(store, late[:1] * -1.0, prefix="/lib/after")
    in_files = persisted_ids(settings.faiss_path, 16).tolist()
    assert in_files == list(range(1, 29)) and len(set(in_files)) == 28


def test_base_ids_sidecar_names_its_base(settings: Settings) -> None:
    """Readers map the base's sorted ids from a sidecar named after the base file (inode, size,
    mtime); a sidecar that does not match the base is never used, and a stale one is dropped
    when a new base is written."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ivf = replace(settings, faiss_ivf_min_faces=100, faiss_delta_max=0)
    with Store.open(ivf, SMALL) as store:
        ids = _write(store, vectors[:200])
    sidecars = list(ivf.faiss_path.parent.glob("faces.ids-*.npy"))
    assert len(sidecars) == 1 and np.load(sidecars[0]).tolist() == ids
    np.save(sidecars[0], np.arange(200, dtype=np.int64) + 10_000)  # wrong ids, right length
    sidecars[0].rename(ivf.faiss_path.parent / "faces.ids-stale.npy")
    with Store.open(ivf, read_only=True) as store:
        hits = store.search(vectors[:3], k=1)
    assert [row[0].face_id for row in hits] == ids[:3]
    with Store.open(ivf, SMALL) as store:  # a new base (the log is folded at once)
        more = _write(store, vectors[200:], prefix="/lib/r")
    sidecars = list(ivf.faiss_path.parent.glob("faces.ids-*.npy"))
    assert len(sidecars) == 1 and np.load(sidecars[0]).tolist() == ids + more
    assert persisted_ids(ivf.faiss_path, 16).tolist() == ids + more


def test_pq_base_reranks_on_exact_vectors_kept_beside_it(settings: Settings) -> None:
    """A PQ base's candidates are re-ranked on the exact vectors of a sidecar named after the
    base; a lost sidecar is taken from the catalog again; a base of another kind (an IVF-Flat
    base of an older version) is rebuilt as PQ by the next writer."""
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat = replace(settings, faiss_ivf_min_faces=100, faiss_delta_max=0, faiss_ivf_kind="flat")
    with Store.open(flat, SMALL) as store:
        ids = _write(store, vectors[:200])
    assert not list(flat.faiss_path.parent.glob("faces.vectors-*.npy"))  # flat needs none
    pq = replace(flat, faiss_ivf_kind="pq", faiss_nprobe=1024)
    with Store.open(pq, SMALL) as store:
        more = _write(store, vectors[200:], prefix="/lib/r")
    (sidecar,) = pq.faiss_path.parent.glob("faces.vectors-*.npy")
    np.testing.assert_array_equal(np.load(sidecar), vectors)  # in sorted id order
    for lost in (False, True):
        if lost:
            sidecar.unlink()
        with Store.open(pq, read_only=True) as store:
            index = store.faiss_index()
            assert index.refine == pq.faiss_refine and index.vectors is not None
            hits = store.search(vectors[[0, 250]], k=1)
        assert [row[0].face_id for row in hits] == [ids[0], more[50]]
        assert all(row[0].distance < 1e-3 for row in hits)  # exact, not a PQ estimate
    assert len(list(pq.faiss_path.parent.glob("faces.vectors-*.npy"))) == 1


def _pq_home(settings: Settings, seed: int) -> tuple[Settings, list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pq = replace(settings, faiss_ivf_min_faces=100, faiss_delta_max=0, faiss_ivf_kind="pq",
                 faiss_nprobe=1024)
    with Store.open(pq, SMALL) as store:
        ids = _write(store, vectors)
    return pq, ids, vectors


def _sidecar_files(home: Path) -> dict[str, Path]:
    files = {}
    for kind, pattern in (("ids", "faces.ids-*.npy"), ("vectors", "faces.vectors-*.npy"),
                          ("sum", "faces.sum-*.txt")):
        (files[kind],) = home.glob(pattern)
    return files


def test_a_copied_home_adopts_its_sidecars(settings: Settings, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the home (`cp -a`: same bytes, new inodes) uses the sidecars written with its
    base: found by the base's content hash and renamed to the copy's key, without reading the
    catalog's vectors or gathering the base's ids."""
    pq, ids, vectors = _pq_home(settings, 3)
    copy = tmp_path / "copied-home"
    subprocess.run(["cp", "-a", str(pq.home), str(copy)], check=True)
    moved = replace(pq, home=copy)
    before = {kind: p.stat().st_ino for kind, p in _sidecar_files(copy).items()}
    assert moved.faiss_path.stat().st_ino != pq.faiss_path.stat().st_ino

    def no_catalog_read(*_: object) -> None:
        raise AssertionError("read the vectors from the catalog")

    monkeypatch.setattr(Store, "_catalog_vectors", no_catalog_read)
    monkeypatch.setattr("indexer.store.vectors._base_ids", no_catalog_read)
    for _ in range(2):  # adopted, then found under the copy's own key
        with Store.open(moved, read_only=True) as store:
            index = store.faiss_index()
            assert index.vectors is not None
            hits = store.search(vectors[[0, 250]], k=1)
        assert [row[0].face_id for row in hits] == [ids[0], ids[250]]
        after = _sidecar_files(copy)
        assert {kind: p.stat().st_ino for kind, p in after.items()} == before  # renamed
        assert all(moved.faiss_path.stat().st_ino == int(p.name.split("-")[1].split("-")[0])
                   for p in after.values())
    monkeypatch.undo()
    from indexer.store.snapshot import index_file_vectors

    out = np.zeros_like(vectors)
    assert index_file_vectors(moved.faiss_path, 16, np.asarray(ids), out).all()
    np.testing.assert_array_equal(out, vectors)


def test_a_replaced_base_is_never_paired_with_old_sidecars(settings: Settings,
                                                           tmp_path: Path) -> None:
    """A base file replaced by one of other content (same faces and size, other vectors) under
    a new inode: the old sidecars' recorded hash does not match, so they are neither used nor
    adopted; the reader gathers the ids from the base it has and writes its own sidecars."""
    from indexer.store.sidecars import file_key, find

    pq, ids, _ = _pq_home(settings, 4)
    other, _, _ = _pq_home(replace(settings, home=tmp_path / "other"), 5)
    old = _sidecar_files(pq.home)
    replaced = tmp_path / "replaced.faiss"
    replaced.write_bytes(other.faiss_path.read_bytes())
    os.utime(replaced, ns=(pq.faiss_path.stat().st_atime_ns, pq.faiss_path.stat().st_mtime_ns))
    os.replace(replaced, pq.faiss_path)  # a new inode; the same mtime
    key = file_key(pq.faiss_path)
    assert find(pq.faiss_path, key) == {}
    with Store.open(pq, read_only=True) as store:
        index = store.faiss_index()
        assert index.base_ids.tolist() == ids
    assert all(p.exists() for p in old.values())  # not adopted
    own = {p.name for p in pq.home.glob(f"faces.*-{key}.*")}
    assert own == {f"faces.ids-{key}.npy", f"faces.vectors-{key}.npy", f"faces.sum-{key}.txt"}
    assert {p.stat().st_ino for p in map(pq.home.joinpath, own)}.isdisjoint(
        p.stat().st_ino for p in old.values())


def test_centroids_cache_follows_every_change_to_the_clusters(settings: Settings) -> None:
    """`centroids()` reads a cache file while the clusters are unchanged; a change by any
    writer (which knows nothing of the cache) makes readers read the catalog again."""
    from indexer import corrections
    from indexer.synthetic_home import build

    build(settings, 400, "dlib", named=0)
    with Store.open(settings, read_only=True) as store:
        ids, centroids, sizes = store.centroids()
    cache = settings.home / "centroids.npz"
    (matrix,) = settings.home.glob("centroids-*.npy")  # the centroids, mapped by readers
    assert cache.is_file() and len(ids) > 10
    np.save(matrix, np.ones_like(centroids))
    with Store.open(settings, read_only=True) as store:  # unchanged clusters: the files are used
        assert (store.centroids()[1] == 1.0).all()
        assert isinstance(store.centroids()[1], np.memmap)
    with Store.open(settings, DLIB) as store, store.transaction() as con:
        store.set_centroid(con, int(ids[0]), centroids[0] * 0.5, int(sizes[0]))
    with Store.open(settings, read_only=True) as store:
        got_ids, got, got_sizes = store.centroids()
    assert got_ids.tolist() == ids.tolist() and got_sizes.tolist() == sizes.tolist()
    np.testing.assert_allclose(got[0], centroids[0] * 0.5)
    np.testing.assert_allclose(got[1:], centroids[1:])
    corrections.merge(settings, int(ids[1]), int(ids[2]), force=True)
    cache.write_bytes(b"not a cache")  # and an unreadable cache is read past
    with Store.open(settings, read_only=True) as store:
        after = store.centroids()[0].tolist()
    assert int(ids[2]) not in after and int(ids[1]) in after and len(after) == len(ids) - 1
    assert len(list(settings.home.glob("centroids-*.npy"))) == 1  # the stale matrices dropped
