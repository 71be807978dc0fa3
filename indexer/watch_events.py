"""Filesystem events for the watch daemon: watchdog events become a queue of small operations.

The observer threads only translate and enqueue; the daemon thread applies the operations in
order. Events are hints and the disk is the truth: the daemon stats every file before it acts.

inotify is used when the OS allows it. When it refuses more watches (ENOSPC: the
fs.inotify.max_user_watches limit; EMFILE: too many inotify instances), either when the folders
are first scheduled or later for a new sub-folder, `Watching` falls back to polling with a
warning instead of dying, and tells the daemon to rescan so nothing changed meanwhile is missed.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from .imageio import is_image_path

log = logging.getLogger(__name__)

WATCH_LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)
"""What inotify_add_watch / inotify_init fail with when the OS refuses more watches."""

ObserverFactory = Callable[[], BaseObserver]

OpKind = Literal["touch", "scan", "move", "delete"]


@dataclass(frozen=True)
class Op:
    """One thing that happened on disk, in the order it happened.

    touch: a file was created, written or had its times changed (look at it once it settles).
    scan: a folder appeared (look at every image under it).
    move: `path` became `dest` (a file, or a folder when is_dir).
    delete: `path` is gone (a file, or a folder and everything under it when is_dir).
    """

    kind: OpKind
    path: str
    dest: str = ""
    is_dir: bool = False


class OpQueue:
    """A thread-safe FIFO of Ops; `arrived` is set whenever something is added."""

    def __init__(self) -> None:
        self._ops: deque[Op] = deque()
        self._lock = threading.Lock()
        self.arrived = threading.Event()

    def put(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)
        self.arrived.set()

    def drain(self) -> list[Op]:
        with self._lock:
            ops = list(self._ops)
            self._ops.clear()
            self.arrived.clear()
        return ops

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)


class PathFilter:
    """Which paths the daemon cares about: images under a root, not hidden, not in the home."""

    def __init__(self, roots: Sequence[Path], home: Path) -> None:
        self.roots = [str(r) for r in roots]
        self.home = str(home)

    def visible(self, path: str) -> bool:
        """Inside a root, outside the index home, and in no hidden file or folder."""
        if path == self.home or path.startswith(self.home.rstrip(os.sep) + os.sep):
            return False
        for root in self.roots:
            if path == root:
                return True
            prefix = root.rstrip(os.sep) + os.sep
            if path.startswith(prefix):
                return not any(part.startswith(".")
                               for part in path[len(prefix):].split(os.sep))
        return False

    def wanted_file(self, path: str) -> bool:
        return self.visible(path) and is_image_path(Path(path))


class EventHandler(FileSystemEventHandler):
    """Runs in watchdog's thread: turns events into Ops (and notices unwatched new folders)."""

    def __init__(self, queue: OpQueue, paths: PathFilter) -> None:
        self.queue = queue
        self.paths = paths
        self.watched_dirs: Callable[[], set[bytes] | None] = lambda: None
        self.unwatched: list[str] = []
        """New folders inotify could not watch (the watch limit); the daemon falls back."""

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._translate(event)
        except Exception:  # an observer thread must never die of one odd event
            log.exception("could not handle file event %r", event)

    def _translate(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        put, paths = self.queue.put, self.paths
        if isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent
                      | FileAttribEvent):
            if paths.wanted_file(src):
                put(Op("touch", src))
        elif isinstance(event, FileDeletedEvent):
            if paths.wanted_file(src):
                put(Op("delete", src))
        elif isinstance(event, FileMovedEvent):
            src_ok, dest_ok = paths.wanted_file(src), paths.wanted_file(dest)
            if src_ok and dest_ok:
                put(Op("move", src, dest))
            elif src_ok:
                put(Op("delete", src))  # renamed to a non-image name, hidden, or moved away
            elif dest_ok:
                put(Op("touch", dest))  # e.g. a temporary file renamed into place
        elif isinstance(event, DirCreatedEvent):
            if paths.visible(src):
                self._check_watched(src)
                put(Op("scan", src, is_dir=True))
        elif isinstance(event, DirDeletedEvent):
            if paths.visible(src):
                put(Op("delete", src, is_dir=True))
        elif isinstance(event, DirMovedEvent):
            src_ok, dest_ok = paths.visible(src), paths.visible(dest)
            if src_ok and dest_ok:
                put(Op("move", src, dest, is_dir=True))
            elif src_ok:
                put(Op("delete", src, is_dir=True))
            elif dest_ok:
                put(Op("scan", dest, is_dir=True))

    def _check_watched(self, folder: str) -> None:
        watched = self.watched_dirs()
        if watched is None or os.fsencode(folder) in watched:
            return
        if os.path.isdir(folder) and not os.path.islink(folder):
            self.unwatched.append(folder)
            self.queue.arrived.set()


def _inotify_watched(observer: BaseObserver) -> set[bytes] | None:
    """Folders an inotify observer really watches, or None where that cannot be seen.

    watchdog (7.x) skips a sub-folder it cannot watch without saying so, even when the reason is
    the watch limit; this looks at its bookkeeping to notice. Private attributes, read with care:
    a watchdog without them simply gives None (no check)."""
    found: set[bytes] = set()
    seen = False
    for emitter in list(getattr(observer, "emitters", ())):
        group = getattr(emitter, "_inotify", None)
        by_path = getattr(group, "_active_callbacks_by_path", None)
        if isinstance(by_path, dict):
            seen = True
            found.update(p if isinstance(p, bytes) else os.fsencode(p) for p in list(by_path))
    return found if seen else None


def _unwatched_under(roots: Sequence[Path], watched: set[bytes]) -> list[str]:
    missing = []
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(root):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if (not os.path.islink(full) and os.fsencode(full) not in watched
                        and os.path.isdir(full)):
                    missing.append(full)
        if os.fsencode(str(root)) not in watched:
            missing.append(str(root))
    return missing


def default_observer() -> BaseObserver:
    from watchdog.observers import Observer

    return Observer()


class Watching:
    """The running observer: inotify when possible, polling when the OS refuses more watches."""

    def __init__(self, roots: Sequence[Path], handler: EventHandler, *,
                 poll_interval: float, observer_factory: ObserverFactory | None = None,
                 polling: bool = False) -> None:
        self.roots = list(roots)
        self.polling = polling
        self.handler = handler
        self.poll_interval = poll_interval
        self.observer_factory = observer_factory or default_observer
        self.observer: BaseObserver | None = None
        self.mode = "none"

    def start(self) -> None:
        if self.polling:
            from watchdog.observers.polling import PollingObserver

            self._start(PollingObserver(timeout=self.poll_interval), "polling")
            return
        try:
            self._start(self.observer_factory(), "inotify")
            watched = _inotify_watched(self.observer) if self.observer else None
            if watched is not None:
                missing = _unwatched_under(self.roots, watched)
                if missing:
                    raise OSError(errno.ENOSPC, f"{len(missing)} folders could not be watched "
                                  f"(first: {missing[0]})")
                self.handler.watched_dirs = lambda: _inotify_watched(self.observer) \
                    if self.observer is not None else None
        except OSError as exc:
            if exc.errno not in WATCH_LIMIT_ERRNOS:
                self.stop()
                raise
            self._fall_back(exc)

    def _start(self, observer: BaseObserver, mode: str) -> None:
        self.stop()
        self.observer = observer
        self.mode = mode
        observer.start()
        for root in self.roots:
            observer.schedule(self.handler, str(root), recursive=root.is_dir())
        log.info("watching %s (%s)", ", ".join(map(str, self.roots)), mode)

    def _fall_back(self, exc: OSError) -> None:
        from watchdog.observers.polling import PollingObserver

        log.warning(
            "the OS refuses more inotify watches (%s); falling back to polling every %.1f s. "
            "Changes will show up a little later; raising the limit (sysctl "
            "fs.inotify.max_user_watches) brings back instant updates", exc.strerror or exc,
            self.poll_interval)
        self.handler.watched_dirs = lambda: None
        self._start(PollingObserver(timeout=self.poll_interval), "polling")

    def check(self) -> bool:
        """Fall back to polling if inotify lost folders since; True when that just happened
        (the caller should rescan, since events in between may be lost)."""
        if self.mode != "inotify" or self.observer is None:
            return False
        if not self.handler.unwatched:
            return False
        lost = OSError(errno.ENOSPC, f"cannot watch new folder {self.handler.unwatched[0]}")
        self.handler.unwatched.clear()
        self._fall_back(lost)
        return True

    def stop(self) -> None:
        observer, self.observer = self.observer, None
        if observer is None:
            return
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=10)
        except Exception:  # stopping must not hide why we stop
            log.debug("error stopping the file observer", exc_info=True)


def describe(op: Op) -> str:
    return f"{op.kind} {op.path}" + (f" -> {op.dest}" if op.dest else "")


__all__ = ["EventHandler", "Op", "OpQueue", "PathFilter", "Watching", "default_observer",
           "describe"]
