"""Fast tests of the watcher's event layer: watchdog events become ordered operations, and an
observer the OS refuses watches to falls back to polling. No model, no photos."""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers import Observer

from indexer.watch_events import EventHandler, Op, OpQueue, PathFilter, Watching


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "pics"
    folder.mkdir()
    return folder


@pytest.fixture
def handler(root: Path, tmp_path: Path) -> EventHandler:
    return EventHandler(OpQueue(), PathFilter([root], tmp_path / "pics" / "index-home"))


def test_file_events_become_ordered_operations(handler: EventHandler, root: Path) -> None:
    a, b = str(root / "a.jpg"), str(root / "sub" / "b.JPG")
    for event in (FileCreatedEvent(a), FileModifiedEvent(a), FileClosedEvent(a),
                  FileOpenedEvent(a), FileClosedNoWriteEvent(a),  # our own reads: ignored
                  FileMovedEvent(a, b), FileDeletedEvent(b)):
        handler.dispatch(event)
    assert handler.queue.drain() == [Op("touch", a), Op("touch", a), Op("touch", a),
                                     Op("move", a, b), Op("delete", b)]
    assert not handler.queue.arrived.is_set()


def test_non_images_hidden_paths_and_the_index_home_are_ignored(handler: EventHandler,
                                                                root: Path) -> None:
    for path in ("notes.txt", ".hidden.jpg", ".cache/x.jpg", "index-home/x.png"):
        handler.dispatch(FileCreatedEvent(str(root / path)))
    handler.dispatch(DirCreatedEvent(str(root / ".thumbnails")))
    assert handler.queue.drain() == []


def test_renames_across_the_image_boundary(handler: EventHandler, root: Path) -> None:
    photo, tmp, hidden = str(root / "p.jpg"), str(root / "p.jpg.part"), str(root / ".p.jpg")
    handler.dispatch(FileMovedEvent(tmp, photo))      # a download renamed into place
    handler.dispatch(FileMovedEvent(photo, hidden))   # hidden away: gone for the index
    handler.dispatch(FileMovedEvent(photo, tmp))      # renamed to a non-image name
    assert handler.queue.drain() == [Op("touch", photo), Op("delete", photo),
                                     Op("delete", photo)]


def test_folder_events(handler: EventHandler, root: Path) -> None:
    d, e, h = str(root / "d"), str(root / "e"), str(root / ".trash")
    handler.dispatch(DirCreatedEvent(d))
    handler.dispatch(DirMovedEvent(d, e))
    handler.dispatch(DirMovedEvent(e, h))   # moved into a hidden folder: everything gone
    handler.dispatch(DirMovedEvent(h, d))   # and back: look at all of it again
    handler.dispatch(DirDeletedEvent(d))
    assert handler.queue.drain() == [
        Op("scan", d, is_dir=True), Op("move", d, e, is_dir=True),
        Op("delete", e, is_dir=True), Op("scan", d, is_dir=True), Op("delete", d, is_dir=True)]


def test_inotify_refusal_falls_back_to_polling(handler: EventHandler, root: Path,
                                               caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("indexer"), "propagate", True)

    class Exhausted(Observer):  # type: ignore[misc,valid-type]
        def schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    watching = Watching([root], handler, poll_interval=0.1, observer_factory=Exhausted)
    with caplog.at_level(logging.WARNING, logger="indexer"):
        watching.start()
    try:
        assert watching.mode == "polling"
        assert "falling back to polling" in caplog.text
        (root / "new.jpg").write_bytes(b"x")
        deadline = time.monotonic() + 30
        while Op("touch", str(root / "new.jpg")) not in handler.queue.drain():
            assert time.monotonic() < deadline, "the polling observer never saw the new file"
            handler.queue.arrived.wait(0.2)
    finally:
        watching.stop()


def test_other_os_errors_are_not_mistaken_for_the_watch_limit(handler: EventHandler,
                                                              root: Path) -> None:
    class Broken(Observer):  # type: ignore[misc,valid-type]
        def schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.EACCES, "permission denied")

    watching = Watching([root], handler, poll_interval=0.1, observer_factory=Broken)
    with pytest.raises(OSError, match="permission denied"):
        watching.start()
    assert watching.observer is None


def test_a_new_folder_inotify_cannot_watch_switches_to_polling(
        handler: EventHandler, root: Path) -> None:
    watching = Watching([root], handler, poll_interval=0.1)
    watching.start()
    try:
        assert watching.mode == "inotify"
        assert handler.watched_dirs() is not None, "watchdog's watch bookkeeping not found"
        assert watching.check() is False
        # Pretend the kernel refused the watch for a new folder: it is missing from the set.
        unwatched = root / "new"
        unwatched.mkdir()
        handler.watched_dirs = lambda: set()
        handler.dispatch(DirCreatedEvent(str(unwatched)))
        assert watching.check() is True
        assert watching.mode == "polling"
    finally:
        watching.stop()
