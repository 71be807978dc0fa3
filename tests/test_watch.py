"""The watch daemon in this process: a real watchdog observer on tmp folders, real photos and the
real dlib model. Every wait polls with a generous timeout; no test asserts wall-clock times."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.assign import threshold_for
from indexer.errors import IndexBusy
from indexer.recluster import recluster
from indexer.settings import Settings
from indexer.store import Counts, Store
from indexer.store.vectors import persisted_ids
from indexer.types import ModelInfo
from indexer.watch import GENERATION_KEY, WatchDaemon
from tests.conftest import REPO, lfw_identities

TIMEOUT = 120.0
MODEL_INFO = ModelInfo(name="dlib", dim=128, weights="dlib_face_recognition_resnet_model_v1")


class CountingModel:
    """The real model, counting the images it is asked to embed (re-embedding shows here)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.images = 0

    @property
    def info(self) -> Any:
        return self.inner.info

    def load(self) -> None:
        self.inner.load()

    def analyze(self, images: list[np.ndarray]) -> list[Any]:
        self.images += len(images)
        return self.inner.analyze(images)


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


@contextmanager
def running(daemon: WatchDaemon) -> Iterator[WatchDaemon]:
    """Run the daemon on a thread until the block ends; its errors fail the test."""
    catalog(daemon.settings)  # attach the catalog in this process before the daemon does
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="watch-daemon", daemon=True)
    thread.start()
    wait_for(lambda: daemon.ready.is_set() or bool(errors), "the daemon to start")
    if errors:
        raise errors[0]
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the daemon did not stop"
    if errors:
        raise errors[0]


_readers: dict[Path, Store] = {}


def catalog(settings: Settings) -> Store:
    """The test's own connection to the daemon's catalog, kept open for the whole test.

    In one process DuckDB shares a database between connections; a connection opened and
    closed while another thread does the same can race on attaching the file. Holding one
    connection open keeps the database attached, so the daemon and the test just join it."""
    store = _readers.get(settings.home)
    if store is None:
        store = _readers[settings.home] = Store.open(settings, MODEL_INFO)
    return store


@pytest.fixture(autouse=True)
def _close_readers() -> Iterator[None]:
    yield
    while _readers:
        _readers.popitem()[1].close(save=False)


def counts(settings: Settings) -> Counts:
    return catalog(settings).counts()


def faces_by_path(settings: Settings) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for face in catalog(settings).faces():
        out.setdefault(face.path, []).append(face.face_id)
    return out


def assert_faiss_in_step(settings: Settings) -> set[int]:
    """The FAISS file the daemon saved holds exactly the catalog's faces."""
    in_catalog = {f.face_id for f in catalog(settings).faces()}
    in_faiss = persisted_ids(settings.faiss_path, catalog(settings).model.dim).tolist()
    assert len(in_faiss) == len(set(in_faiss)), "duplicate ids in FAISS"
    assert set(in_faiss) == in_catalog
    return in_catalog


def no_recluster(store: Store, settings: Settings) -> None:
    raise AssertionError("this test does not expect a recluster")


@pytest.fixture
def quick(settings: Settings) -> Settings:
    """Settings with short timers, so events are acted on soon (the defaults are for people)."""
    return replace(settings, watch_settle=0.5, watch_debounce=0.1, batch_size=8,
                   recluster_every=0, recluster_interval=0)


@pytest.fixture
def people(faces_dir: Path) -> dict[str, list[Path]]:
    return lfw_identities(faces_dir, min_images=8, count=6)


def test_twenty_copied_photos_become_searchable(quick: Settings, dlib_model: Any,
                                                people: dict[str, list[Path]],
                                                tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    photos = [p for files in list(people.values())[:4] for p in files[:5]]
    assert len(photos) == 20
    model = CountingModel(dlib_model)
    with running(WatchDaemon(quick, model, [folder], recluster=no_recluster)) as daemon:
        for i, photo in enumerate(photos):  # some into a new sub-folder, as a copy tool does
            dest = folder / ("trip" if i % 2 else "") / photo.name
            dest.parent.mkdir(exist_ok=True)
            shutil.copy2(photo, dest)
        wait_for(lambda: counts(quick).images == 20 and daemon.idle.is_set(),
                 "20 photos to be indexed")
        report = daemon.report
    c = counts(quick)
    assert (c.images, c.ok, c.failed) == (20, 20, 0)
    by_path = faces_by_path(quick)
    assert len(by_path) == 20, "every LFW photo has its face found"
    assert c.faces == sum(len(v) for v in by_path.values()) >= 20
    assert model.images == 20, "each photo embedded exactly once"
    assert report.summary.new == 20 and report.summary.failed == 0
    ids = assert_faiss_in_step(quick)
    assert len(ids) == c.faces
    # Searchable: each photo's own face is its nearest neighbour in the saved index.
    from indexer.imageio import decode

    rgb = decode(photos[0], max_pixels=quick.max_image_pixels, max_bytes=quick.max_file_bytes)
    found = dlib_model.analyze([rgb])[0]
    best = catalog(quick).search(np.stack([f.embedding for f in found]), 1)[0][0]
    assert best.path.endswith(photos[0].name) and best.distance < 1e-3


def test_renames_and_folder_moves_keep_face_ids_and_deletes_forget(
        quick: Settings, dlib_model: Any, people: dict[str, list[Path]],
        tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    names = list(people)
    a = [shutil.copy2(p, (folder / "a").mkdir(parents=True, exist_ok=True) or folder / "a")
         for p in people[names[0]][:3]]
    b = [shutil.copy2(p, (folder / "b").mkdir(parents=True, exist_ok=True) or folder / "b")
         for p in people[names[1]][:2]]
    a, b = [Path(p) for p in a], [Path(p) for p in b]
    model = CountingModel(dlib_model)
    with running(WatchDaemon(quick, model, [folder], recluster=no_recluster)) as daemon:
        wait_for(lambda: counts(quick).images == 5 and daemon.idle.is_set(), "the catch-up")
        assert model.images == 5
        before = faces_by_path(quick)

        renamed = folder / "a" / "renamed.jpg"
        a[0].rename(renamed)
        moved_folder = folder / "a" / "nested"
        (folder / "b").rename(moved_folder)
        a[1].unlink()
        expected = {str(renamed), str(a[2])} | {str(moved_folder / p.name) for p in b}
        wait_for(lambda: set(faces_by_path(quick)) == expected and daemon.idle.is_set(),
                 "the rename, folder move and deletion to reach the catalog")
        after = faces_by_path(quick)
        assert after[str(renamed)] == before[str(a[0])]
        for p in b:
            assert after[str(moved_folder / p.name)] == before[str(p)]
        assert model.images == 5, "nothing was re-embedded"
        deleted = set(before[str(a[1])])

        # A changed file (new content at the same path) is re-embedded, once.
        shutil.copyfile(people[names[2]][0], a[2])
        wait_for(lambda: faces_by_path(quick).get(str(a[2])) not in (None, before[str(a[2])])
                 and daemon.idle.is_set(), "the changed file to be re-embedded")
        assert model.images == 6
        assert daemon.report.summary.changed == 1
    in_faiss = assert_faiss_in_step(quick)
    assert in_faiss.isdisjoint(deleted) and in_faiss.isdisjoint(before[str(a[2])])


def test_a_slowly_written_file_is_indexed_once_when_complete(
        quick: Settings, dlib_model: Any, people: dict[str, list[Path]],
        tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    data = next(iter(people.values()))[0].read_bytes()
    target = folder / "slow.jpg"
    settings = replace(quick, watch_settle=1.0)
    model = CountingModel(dlib_model)
    with running(WatchDaemon(settings, model, [folder], recluster=no_recluster)) as daemon:
        chunks = 8
        step = -(-len(data) // chunks)
        with target.open("wb") as fh:  # about 3 s, each pause well inside the settle time
            for i in range(chunks):
                fh.write(data[i * step:(i + 1) * step])
                fh.flush()
                os.fsync(fh.fileno())
                assert counts(settings).images == 0, "a half-written file was looked at"
                time.sleep(0.4)
        wait_for(lambda: counts(settings).images == 1 and daemon.idle.is_set(),
                 "the complete file to be indexed")
        time.sleep(2 * settings.watch_settle)  # nothing more happens afterwards
    c = counts(settings)
    assert (c.images, c.ok, c.failed) == (1, 1, 0)
    assert c.faces >= 1
    assert model.images == 1, "indexed exactly once"
    assert daemon.report.summary.failed == 0


def test_events_arriving_during_a_recluster_are_kept(quick: Settings, dlib_model: Any,
                                                     people: dict[str, list[Path]],
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    photos = list(people.values())[0][:2]
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_recluster(store: Store, settings: Settings) -> str:  # a closure: runs on a thread
        calls.append(store.counts().faces)
        started.set()
        assert release.wait(TIMEOUT)
        store.set_meta(GENERATION_KEY, str(len(calls)))
        return "fake"

    settings = replace(quick, recluster_every=1)
    with running(WatchDaemon(settings, dlib_model, [folder],
                             recluster=slow_recluster)) as daemon:
        shutil.copy2(photos[0], folder)
        assert started.wait(TIMEOUT), "no recluster after a new face"
        shutil.copy2(photos[1], folder)  # arrives while the recluster runs
        # ... and is indexed while it still runs: the recluster no longer stops the daemon.
        wait_for(lambda: counts(settings).images == 2 and daemon.idle.is_set(),
                 "the photo copied during the recluster")
        assert daemon.recluster_running and daemon.report.reclusters == 0
        release.set()
        # The counter moves once the run ended (waiting on `calls` alone raced with it).
        wait_for(lambda: daemon.report.reclusters == 2, "the second recluster")
        assert calls[0] >= 1 and calls[1] > calls[0]
        assert daemon.report.assignment_reloads >= 2


def test_a_second_daemon_on_the_same_home_is_refused(quick: Settings, dlib_model: Any,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    with running(WatchDaemon(quick, dlib_model, [folder], recluster=no_recluster)):
        with pytest.raises(IndexBusy, match="faceidx watch"):
            WatchDaemon(quick, dlib_model, [folder]).run()
        # The command from another shell: one line, exit code 2, no traceback. (This test's
        # own catalog connection is closed first: it would keep the other process out.)
        _readers.pop(quick.home).close(save=False)
        result = subprocess.run(
            [sys.executable, "-m", "cli.app", "watch", "--home", str(quick.home), str(folder)],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
        assert result.returncode == 2, result.stderr
        assert "already indexing" in result.stderr and "Traceback" not in result.stderr


def test_falls_back_to_polling_when_inotify_is_refused(quick: Settings, dlib_model: Any,
                                                       people: dict[str, list[Path]],
                                                       tmp_path: Path) -> None:
    from watchdog.observers import Observer

    class Exhausted(Observer):  # type: ignore[misc,valid-type]
        def schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(28, "inotify watch limit reached")

    folder = tmp_path / "watched"
    folder.mkdir()
    settings = replace(quick, watch_poll_interval=0.3)
    with running(WatchDaemon(settings, dlib_model, [folder], recluster=no_recluster,
                             observer_factory=Exhausted)) as daemon:
        assert daemon.mode == "polling"
        shutil.copy2(next(iter(people.values()))[0], folder)
        wait_for(lambda: counts(settings).images == 1 and daemon.idle.is_set(),
                 "a polled photo to be indexed")
    assert counts(settings).faces >= 1


def test_known_faces_join_their_cluster_online_and_strangers_wait(
        quick: Settings, dlib_model: Any, people: dict[str, list[Path]], faces_dir: Path,
        tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    (known_a, a), (_, b) = list(people.items())[:2]
    # A stranger: an identity that has no cluster.
    stranger = lfw_identities(faces_dir, min_images=8, count=7)["Angelina_Jolie"]
    for photo in a[:5] + b[:5]:
        shutil.copy2(photo, folder)
    with running(WatchDaemon(quick, dlib_model, [folder], recluster=no_recluster)) as daemon:
        wait_for(lambda: counts(quick).images == 10 and daemon.idle.is_set(), "the catch-up")
        store = catalog(quick)
        # No person yet: the catch-up's faces wait, found people among themselves online
        # (indexer.online), or join those in the next batch.
        assert all(r == "no clusters yet; waits for recluster" or r.startswith("online: ")
                   for r in {f.assign_reason for f in store.faces()})
        largest: dict[str, int] = {}  # the main face of each photo (LFW borders hold others)
        for face in sorted(store.faces(), key=lambda f: (f.bbox[2] - f.bbox[0])):
            largest[Path(face.path).name] = face.face_id
        recluster(store, quick)  # from another "shell": the daemon must notice
        threshold = threshold_for("dlib", quick)
        (known_cluster,) = {f.cluster_id for f in store.faces([largest[p.name] for p in a[:5]])}
        assert known_cluster is not None
        size_before = dict(zip(*store.centroids()[::2], strict=True))[known_cluster]

        shutil.copy2(a[5], folder)
        shutil.copy2(stranger[0], folder)
        wait_for(lambda: counts(quick).images == 12 and daemon.idle.is_set(),
                 "the newcomers to be indexed")
        assert daemon.report.assignment_reloads >= 1, "the new clusters were not noticed"
        faces = {Path(f.path).name: f for f in sorted(
            store.faces(), key=lambda f: (f.bbox[2] - f.bbox[0]))}
        known, other = faces[a[5].name], faces[stranger[0].name]
        assert known.cluster_id == known_cluster, \
            f"{known_a} not recognised: {known.assign_reason}"
        assert known.assign_distance is not None and known.assign_distance <= threshold
        assert known.assign_reason.startswith("online: nearest centroid")
        assert other.cluster_id is None, f"a stranger joined {other.cluster_id}"
        assert other.assign_distance is not None and other.assign_distance > threshold
        assert "waits for recluster" in other.assign_reason
        ids, _, sizes = store.centroids()
        assert dict(zip(ids.tolist(), sizes.tolist(), strict=True))[known_cluster] == \
            size_before + 1
