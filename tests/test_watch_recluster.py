"""The watch daemon's recluster runs beside ingest, in a child process: a real watchdog observer,
real photos, the real dlib model and the real recluster, held back between its snapshot and
its write (or inside its snapshot, between its read of the catalog and its read of the
vectors) so that photos, a deletion and corrections arrive while it runs.

The daemon runs on a thread of this process; the recluster in a spawned child, which must open
the catalog itself, so this test reads the catalog only briefly (a connection held open here
would keep the child out)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from indexer import corrections
from indexer.recluster import recluster
from indexer.settings import Settings
from indexer.store import Store
from indexer.store.vectors import persisted_ids
from indexer.watch import WatchDaemon
from tests.conftest import lfw_identities

TIMEOUT = 180.0
GATE = "recluster.gate-open"
SNAPSHOTTED = "recluster.snapshotted"
IN_SNAPSHOT = "recluster.in-snapshot"
T = TypeVar("T")


def gated_recluster(store: Store, settings: Settings) -> Any:
    """The real recluster, waiting after its snapshot until the test opens the gate (a file:
    this runs in the daemon's child process)."""

    def hold() -> None:
        (settings.home / SNAPSHOTTED).touch()
        deadline = time.monotonic() + TIMEOUT
        while not (settings.home / GATE).exists():
            assert time.monotonic() < deadline, "the test never opened the gate"
            time.sleep(0.1)

    return recluster(store, settings, after_snapshot=hold)


def snapshot_gated_recluster(store: Store, settings: Settings) -> Any:
    """The real recluster, waiting inside its snapshot (its ids and corrections read, its
    vectors not yet) until the test opens the gate."""
    from indexer.store import snapshot

    real = snapshot.index_file_vectors

    def gated(*args: Any, **kwargs: Any) -> Any:
        (settings.home / IN_SNAPSHOT).touch()
        deadline = time.monotonic() + TIMEOUT
        while not (settings.home / GATE).exists():
            assert time.monotonic() < deadline, "the test never opened the gate"
            time.sleep(0.1)
        return real(*args, **kwargs)

    snapshot.index_file_vectors = gated  # this child's own module: the daemon's is untouched
    return recluster(store, settings)


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def peek(settings: Settings, read: Callable[[Store], T]) -> T:
    """Read the catalog and close it again at once."""
    store = Store.open(settings, keep_open=True)
    try:
        return read(store)
    finally:
        store.close(save=False)


@contextmanager
def running(daemon: WatchDaemon) -> Iterator[WatchDaemon]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="watch-daemon", daemon=True)
    thread.start()
    wait_for(lambda: daemon.ready.is_set() or bool(errors), "the daemon to start")
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the daemon did not stop"
    if errors:
        raise errors[0]


def largest_face(store: Store) -> dict[str, Any]:
    """The main face of each photo by file name (LFW photos have other faces at the border)."""
    out: dict[str, Any] = {}
    def area(f: Any) -> float:
        return float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))

    for face in sorted(store.faces(), key=area):
        out[Path(face.path).name] = face
    return out


@dataclass
class Watching:
    """A daemon watching photos of two or three people, after its first recluster."""
    daemon: WatchDaemon
    settings: Settings
    folder: Path
    people: list[list[Path]]
    first: dict[str, Any]  # the main face of each photo after the first recluster
    cluster_b: int  # the second person's cluster


@contextmanager
def watching_after_first_recluster(settings: Settings, dlib_model: Any, faces_dir: Path,
                                   tmp_path: Path, recluster_fn: Any, people: int,
                                   **overrides: Any) -> Iterator[Watching]:
    """Four photos each of the first two of `people` LFW people in a watched folder, a daemon
    that reclusters after every face (in a child, through `recluster_fn`, gated by GATE) and
    has run its first recluster straight through."""
    ids = lfw_identities(faces_dir, min_images=8, count=people)
    photos = [list(p) for p in list(ids.values())[:people]]
    a, b = photos[0], photos[1]
    folder = tmp_path / "watched"
    folder.mkdir()
    for photo in a[:4] + b[:4]:
        shutil.copy2(photo, folder)
    quick = replace(settings, watch_settle=0.5, watch_debounce=0.1, batch_size=8,
                    recluster_every=1, recluster_growth=0, recluster_interval=0, **overrides)
    quick.home.mkdir(parents=True, exist_ok=True)
    (quick.home / GATE).touch()  # the first recluster runs straight through
    daemon = WatchDaemon(quick, dlib_model, [folder], recluster=recluster_fn)
    with running(daemon):
        wait_for(lambda: daemon.report.reclusters == 1 and daemon.idle.is_set()
                 and not daemon.recluster_running, "the first recluster")
        first = peek(quick, largest_face)
        (cluster_b,) = {first[p.name].cluster_id for p in b[:4]}
        assert cluster_b is not None
        yield Watching(daemon, quick, folder, photos, first, cluster_b)


def assert_consistent(store: Store, faces: list[Any]) -> None:
    """Every cluster's size is the faces in it (none counted in two people), and the FAISS
    index holds exactly the catalog's faces."""
    sizes = dict(zip(*store.centroids()[::2], strict=True))
    held: dict[int, int] = {}
    for f in faces:
        if f.cluster_id is not None:
            held[f.cluster_id] = held.get(f.cluster_id, 0) + 1
    assert {k: v for k, v in sizes.items() if v} == held, "a face counted in two people"
    in_faiss = persisted_ids(store.settings.faiss_path, store.model.dim).tolist()
    assert sorted(in_faiss) == sorted(f.face_id for f in faces), "FAISS and the catalog disagree"


def test_a_batch_is_indexed_and_searchable_while_a_recluster_runs(
        settings: Settings, dlib_model: Any, faces_dir: Path, tmp_path: Path) -> None:
    with watching_after_first_recluster(settings, dlib_model, faces_dir, tmp_path,
                                        gated_recluster, 3) as w:
        daemon, quick, folder, cluster_b = w.daemon, w.settings, w.folder, w.cluster_b
        a, b, c = w.people
        # Hold the second recluster between its snapshot and its write.
        (quick.home / GATE).unlink()
        (quick.home / SNAPSHOTTED).unlink(missing_ok=True)
        shutil.copy2(a[4], folder)
        wait_for(lambda: (quick.home / SNAPSHOTTED).exists(), "the second recluster's snapshot")
        child = daemon.recluster_pid
        assert child is not None and child != os.getpid(), "the recluster runs in a child"

        # Meanwhile: a batch (a known face and a stranger), a deletion and two corrections.
        shutil.copy2(b[4], folder)
        shutil.copy2(c[0], folder)
        wait_for(lambda: peek(quick, lambda s: s.counts().images) == 11 and daemon.idle.is_set(),
                 "the batch copied during the recluster")
        assert daemon.recluster_running and daemon.recluster_pid == child
        now = peek(quick, largest_face)
        newcomer = now[b[4].name]
        assert newcomer.cluster_id == cluster_b, "not assigned online during the recluster"
        vec = peek(quick, lambda s: s.embeddings([newcomer.face_id])[1])
        hits = peek(quick, lambda s: s.search(vec, 1))
        assert hits[0][0].face_id == newcomer.face_id, "the new face is not searchable"
        gone = now[a[0].name]
        os.remove(folder / a[0].name)  # in the recluster's snapshot, deleted meanwhile
        wait_for(lambda: peek(quick, lambda s: s.counts().images) == 10, "the deletion")
        corrections.rename(quick, cluster_b, "Bea")
        rejected = now[b[1].name]
        corrections.reject(quick, [rejected.face_id], cluster_b)
        assert daemon.recluster_running, f"the recluster ended early: {daemon.report}"

        (quick.home / GATE).touch()
        wait_for(lambda: daemon.report.reclusters == 2 and not daemon.recluster_running,
                 "the second recluster to write")
        wait_for(lambda: daemon.idle.is_set(), "the daemon to settle")

    store = Store.open(quick)
    try:
        faces = store.faces()
        face_ids = {f.face_id for f in faces}
        assert gone.face_id not in face_ids, "a face deleted meanwhile came back"
        assert len(faces) == len(face_ids)
        assert {Path(f.path).name for f in faces} == {p.name for p in a[1:5] + b[:5] + c[:1]}
        named = {p.name: p for p in store.people() if p.name}
        assert named["Bea"].cluster_id == cluster_b, "the name given meanwhile was lost"
        final = largest_face(store)
        assert final[b[4].name].cluster_id == cluster_b, "the face added meanwhile lost its person"
        assert final[b[1].name].cluster_id != cluster_b, "the rejection made meanwhile was lost"
        assert_consistent(store, faces)
        assert np.isfinite(store.embeddings()[1]).all()
    finally:
        store.close(save=False)


def test_the_daemon_commits_while_the_recluster_reads_its_snapshot(
        settings: Settings, dlib_model: Any, faces_dir: Path, tmp_path: Path) -> None:
    """The recluster child holds the catalog only to read ids and corrections: while it is
    still inside its snapshot, the daemon indexes a photo (assigned online, searchable) and
    forgets a deleted one, each within a lock timeout far below the time the child waits.
    Afterwards no face is lost, none counted in two people, and the deleted one stays gone."""
    with watching_after_first_recluster(settings, dlib_model, faces_dir, tmp_path,
                                        snapshot_gated_recluster, 2, lock_timeout=5.0) as w:
        daemon, quick, folder, cluster_b, first = (w.daemon, w.settings, w.folder,
                                                   w.cluster_b, w.first)
        a, b = w.people
        (quick.home / GATE).unlink()
        (quick.home / IN_SNAPSHOT).unlink(missing_ok=True)
        shutil.copy2(a[4], folder)
        wait_for(lambda: (quick.home / IN_SNAPSHOT).exists(), "the recluster's snapshot")
        errors_before = daemon.report.recluster_errors

        shutil.copy2(b[4], folder)  # while the child is inside its snapshot
        gone = first[a[0].name]
        os.remove(folder / a[0].name)
        wanted = {p.name for p in a[1:5] + b[:5]}

        def caught_up() -> bool:
            names = {Path(f.path).name for f in peek(quick, lambda s: s.faces())}
            return names == wanted and daemon.idle.is_set()

        wait_for(caught_up, "the daemon's batch and deletion during the snapshot", timeout=60)
        assert daemon.recluster_running and not (quick.home / GATE).exists(), \
            "the recluster left its snapshot before the gate opened"
        newcomer = peek(quick, largest_face)[b[4].name]
        assert newcomer.cluster_id == cluster_b, "not assigned online during the snapshot"
        vec = peek(quick, lambda s: s.embeddings([newcomer.face_id])[1])
        assert peek(quick, lambda s: s.search(vec, 1))[0][0].face_id == newcomer.face_id

        (quick.home / GATE).touch()
        wait_for(lambda: daemon.report.reclusters == 2 and not daemon.recluster_running,
                 "the recluster to write")
        assert daemon.report.recluster_errors == errors_before
        wait_for(lambda: daemon.idle.is_set(), "the daemon to settle")

    store = Store.open(quick)
    try:
        faces = store.faces()
        face_ids = [f.face_id for f in faces]
        assert len(face_ids) == len(set(face_ids))
        assert gone.face_id not in face_ids, "a face deleted during the snapshot came back"
        assert {Path(f.path).name for f in faces} == {p.name for p in a[1:5] + b[:5]}
        final = largest_face(store)
        assert final[b[4].name].cluster_id == final[b[0].name].cluster_id is not None, \
            "the face added during the snapshot lost its person"
        assert_consistent(store, faces)
    finally:
        store.close(save=False)
