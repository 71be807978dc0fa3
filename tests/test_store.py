"""The store on its own: real DuckDB and FAISS files under tmp_path, synthetic vectors."""

import logging
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.errors import IndexNotFound, ModelMismatch
from indexer.migrations import MIGRATIONS
from indexer.settings import Settings
from indexer.store import Store
from indexer.store.vectors import persisted_ids
from indexer.types import FaceResult, ModelInfo

MODEL = ModelInfo(name="dlib", dim=8, weights="test")


def _face(seed: int) -> FaceResult:
    vec = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    vec /= np.linalg.norm(vec)
    return FaceResult(bbox=(1.0, 2.0, 30.0, 40.0), landmarks=(0.0,) * 10, score=0.9,
                      embedding=vec)


def _add_image(store: Store, path: str, seeds: list[int]) -> tuple[int, list[int]]:
    with store.transaction() as con:
        image_id = store.upsert_image(con, path=path, size=1, mtime=1.0, content_hash=path,
                                      status="ok")
        ids = store.add_faces(con, image_id, [_face(s) for s in seeds])
    return image_id, ids


def test_migrations_run_once_and_model_is_recorded(settings: Settings) -> None:
    with Store.open(settings, MODEL) as store:
        assert store.schema_version() == len(MIGRATIONS)
    with Store.open(settings, MODEL) as store:  # second open: nothing re-applied
        with store._read() as con:
            names = [r[0] for r in con.execute("SELECT name FROM migrations").fetchall()]
        assert names == [name for name, _ in MIGRATIONS]
        assert store.model == MODEL


def test_another_model_is_a_clear_error(settings: Settings) -> None:
    Store.open(settings, MODEL).close()
    other = ModelInfo(name="facenet", dim=512, weights="vggface2")
    with pytest.raises(ModelMismatch, match="made by model dlib"):
        Store.open(settings, other)


def test_read_only_open_of_missing_index_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(IndexNotFound, match="no index at"):
        Store.open(settings, read_only=True)


def test_search_and_remove_keep_faiss_in_step(settings: Settings) -> None:
    with Store.open(settings, MODEL) as store:
        image_a, ids_a = _add_image(store, "/p/a.jpg", [1, 2])
        _, ids_b = _add_image(store, "/p/b.jpg", [3])
        hits = store.search(np.stack([_face(2).embedding]), k=1)[0]
        assert hits[0].face_id == ids_a[1] and hits[0].distance < 1e-3
        with store.transaction() as con:
            assert store.remove_images(con, [image_a]) == 2
        assert store.faiss_index().ntotal == 1
    with Store.open(settings, MODEL) as store:
        assert persisted_ids(settings.faiss_path, MODEL.dim).tolist() == ids_b
        assert store.counts().faces == 1


def test_rolled_back_batch_leaves_both_stores_untouched(settings: Settings) -> None:
    with Store.open(settings, MODEL) as store:
        _add_image(store, "/p/a.jpg", [1])
        with pytest.raises(RuntimeError), store.transaction() as con:
            image_id = store.upsert_image(con, path="/p/b.jpg", size=1, mtime=1.0,
                                          content_hash="b", status="ok")
            store.add_faces(con, image_id, [_face(5)])
            raise RuntimeError("killed mid-batch")
        assert store.counts().faces == 1
        assert store.faiss_index().ntotal == 1


@pytest.mark.parametrize("damage", ["delete", "truncate", "stale"])
def test_faiss_file_is_rebuilt_when_missing_truncated_or_stale(
        settings: Settings, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="indexer")
    with Store.open(settings, MODEL) as store:
        _add_image(store, "/p/a.jpg", [1, 2])
    delta = settings.faiss_path.with_suffix(".delta")
    stale = settings.faiss_path.read_bytes(), delta.read_bytes()
    with Store.open(settings, MODEL) as store:
        _, ids = _add_image(store, "/p/b.jpg", [3])
    if damage == "delete":
        settings.faiss_path.unlink()
    elif damage == "truncate":
        settings.faiss_path.write_bytes(settings.faiss_path.read_bytes()[:50])
    else:
        settings.faiss_path.write_bytes(stale[0])  # FAISS files from before the last batch
        delta.write_bytes(stale[1])
    with Store.open(settings, read_only=True) as store:
        hits = store.search(np.stack([_face(3).embedding]), k=1)[0]
        assert hits[0].face_id == ids[0]
        assert store.faiss_index().ntotal == 3
    assert "FAISS index" in caplog.text


def test_faiss_is_written_atomically(settings: Settings) -> None:
    with Store.open(settings, MODEL) as store:
        _add_image(store, "/p/a.jpg", [1])
    leftovers = [p.name for p in Path(settings.home).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert faiss.read_index(str(settings.faiss_path)).ntotal == 1


def test_move_prefix_keeps_face_ids(settings: Settings) -> None:
    with Store.open(settings, MODEL) as store:
        image_id, ids = _add_image(store, "/p/old/a.jpg", [1, 2])
        with store.transaction() as con:
            assert store.move_prefix(con, "/p/old", "/p/new") == 1
        assert store.images_at(["/p/new/a.jpg"])["/p/new/a.jpg"].image_id == image_id
        assert store.face_ids_of_image(image_id) == ids


def test_distance_to_a_centroid_is_exact_near_zero() -> None:
    """Two copies of a photo form a cluster whose centroid is their own vector: their distance
    to it is 0 to float precision, in the catalog (recluster) and in an export alike, where the
    inner-product form, in float32, is off by up to about 5e-4."""
    from indexer.store import distance_from_ip, distance_to_unit

    rng = np.random.default_rng(7)
    faces = rng.standard_normal((200, 128)).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    exact = distance_to_unit(faces, faces)  # each face against itself
    assert exact.max() < 1e-6
    via_ip = distance_from_ip(np.einsum("ij,ij->i", faces, faces))
    assert via_ip.max() > 1e-4  # the form it replaced, where it mattered
    # one unit vector against many: the same as the float64 distance
    other = distance_to_unit(faces, faces[0])
    want = np.linalg.norm(faces.astype(np.float64) - faces[0].astype(np.float64), axis=1)
    assert np.abs(other - want).max() < 1e-9
