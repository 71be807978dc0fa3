"""The catalog side of `faceidx query` in a child process (indexer.match_worker): it answers
as matching in process does, and a child that dies is a clear error, not a hang."""

import os
import signal

import numpy as np
import pytest

from indexer import query
from indexer.errors import FaceidxError
from indexer.match_worker import MatchWorker
from indexer.settings import Settings
from indexer.store import Store


@pytest.fixture
def synthetic(settings: Settings) -> np.ndarray:
    """A home of 400 synthetic faces in people; returns three query vectors near stored ones."""
    from indexer.synthetic_home import build

    build(settings, 400, "dlib", named=2)
    with Store.open(settings, read_only=True) as store:
        _, vectors = store.embeddings()
    rng = np.random.default_rng(1)
    near = vectors[[3, 150, 390]] + 0.01 * rng.standard_normal((3, vectors.shape[1]))
    return (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)


def test_the_worker_matches_as_in_process(settings: Settings, synthetic: np.ndarray) -> None:
    expected = query.match_vectors(settings, synthetic, 5)
    with MatchWorker(settings) as worker:
        info = worker.recorded_model()
        got = worker.match(synthetic, 5, None)
    assert info is not None and info.name == "dlib"
    assert got == expected
    assert all(v is not None and v.cluster_id >= 0 for v in got[1])


def test_a_worker_that_died_is_a_clear_error(settings: Settings, synthetic: np.ndarray) -> None:
    with MatchWorker(settings) as worker:
        worker.recorded_model()
        os.kill(worker._proc.pid, signal.SIGKILL)
        worker._proc.join()
        with pytest.raises(FaceidxError, match="matching process ended early"):
            worker.match(synthetic, 5, None)


def test_an_error_in_the_worker_reaches_the_caller(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.catalog_path.write_bytes(b"not a catalog")
    with MatchWorker(settings) as worker, pytest.raises(Exception) as caught:
        worker.recorded_model()
    assert not isinstance(caught.value, EOFError)  # the child's own error, not a dead pipe


def test_a_fresh_process_forks_its_worker(settings: Settings, synthetic: np.ndarray,
                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    """As in `faceidx query`: nothing threaded loaded yet, so the child is forked."""
    import subprocess
    import sys

    np.save(tmp_path / "q.npy", synthetic)
    code = (
        "import sys, pickle\n"
        "from indexer import match_worker, settings as s\n"
        "assert match_worker._start_method() == 'fork'\n"
        "w = match_worker.MatchWorker(s.load({'home': sys.argv[1]}))\n"
        "import numpy as np\n"
        "got = w.match(np.load(sys.argv[2]), 5, None)\n"
        "w.close()\n"
        "sys.stdout.buffer.write(pickle.dumps(got))\n")
    out = subprocess.run([sys.executable, "-c", code, str(settings.home), str(tmp_path / "q.npy")],
                         capture_output=True, check=True, timeout=300)
    import pickle

    assert pickle.loads(out.stdout) == query.match_vectors(settings, synthetic, 5)


def test_a_writer_commits_while_the_model_runs_and_the_match_sees_it(
        settings: Settings, synthetic: np.ndarray) -> None:
    """Once warmed up, the worker lets the catalog go until the faces arrive: a writer (the
    watch daemon) deletes the photo of the nearest face meanwhile, without waiting for the
    match, and the match then answers from the catalog as it is, not as it was warmed up."""
    from dataclasses import replace

    nearest = query.match_vectors(settings, synthetic[:1], 1)[0][0][0].face_id
    with MatchWorker(settings) as worker:
        worker.recorded_model()
        writer = replace(settings, lock_timeout=20.0)  # the worker would hold it for ever
        with Store.open(writer) as store:
            (victim,) = [f for f in store.faces() if f.face_id == nearest]
            with store.transaction() as con:
                store.remove_images(con, [victim.image_id])
        got = worker.match(synthetic, 5, None)
    assert nearest not in {m.face_id for m in got[0][0]}, "matched a face deleted meanwhile"
    assert got == query.match_vectors(settings, synthetic, 5)
