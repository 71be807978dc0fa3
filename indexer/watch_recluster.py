"""The watch daemon's recluster, run beside ingest so that indexing never stops for it.

By default it runs in a child process (multiprocessing "spawn"): the snapshot of every vector,
the kNN graph and the spanning tree live and die there, so the daemon's own memory stays that
of an idle daemon. The child opens the catalog only to read its snapshot (ids and corrections:
about a second at 1M faces; the vectors come mostly from the search index's files, see
indexer.store.snapshot) and to write its result in one transaction (indexer.recluster.recluster
re-reads the catalog in it, so faces added, deleted or corrected meanwhile are reconciled).
How long it held the catalog comes back with its outcome. A recluster function that cannot be
pickled (a test's closure) runs on a thread with its own Store instead.

`BackgroundRecluster.poll()` tells the daemon's loop when the run ended; `stop()` ends a run
in progress (a child is terminated: its write is one transaction, so nothing half-written
stays).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)

Recluster = Callable[[Store, Settings], Any]

STOP_GRACE = 5.0
"""Seconds a terminated recluster child gets before it is killed."""


@dataclass(frozen=True)
class Outcome:
    """How a background recluster ended."""

    ok: bool
    summary: str
    seconds: float
    import_error: bool = False
    catalog_seconds: float = 0.0
    """How long the recluster held the catalog open, all told (the daemon waits meanwhile)."""
    catalog_longest: float = 0.0
    """Its longest single hold of the catalog."""


def default_recluster(store: Store, settings: Settings) -> Any:
    """The full recluster of indexer.recluster (imported when first needed)."""
    from .recluster import recluster

    return recluster(store, settings)


class CatalogClock:
    """Times how long a Store holds the catalog open: from a connection made to its release
    (the watch daemon cannot write meanwhile)."""

    def __init__(self, store: Store) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self.holds = 0
        self._since: float | None = None
        self._connect, self._release = store._connect, store.release
        store._connect, store.release = self._timed_connect, self._timed_release  # type: ignore[method-assign]

    def _timed_connect(self) -> Any:
        con = self._connect()
        if self._since is None:
            self._since = time.monotonic()
        return con

    def _timed_release(self) -> None:
        self._release()
        if self._since is not None:
            held = time.monotonic() - self._since
            self.seconds += held
            self.longest = max(self.longest, held)
            self.holds += 1
            self._since = None


_Result = tuple[bool, str, bool, float, float]


def _run(fn: Recluster, settings: Settings) -> _Result:
    """Run `fn` on a Store of its own: (ok, summary or error, whether it was an ImportError,
    seconds it held the catalog, its longest hold)."""
    clock: CatalogClock | None = None
    try:
        store = Store.open(settings, keep_open=True)
        store.release()  # held again only for the snapshot and the write
        clock = CatalogClock(store)
        try:
            result = fn(store, settings)
        finally:
            store.close(save=False)
        return (True, "" if result is None else str(result), False, clock.seconds,
                clock.longest)
    except ImportError as exc:
        return False, str(exc), True, *_held(clock)
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which goes on
        log.exception("background recluster failed")
        return False, f"{type(exc).__name__}: {exc}", False, *_held(clock)


def _held(clock: CatalogClock | None) -> tuple[float, float]:
    return (0.0, 0.0) if clock is None else (clock.seconds, clock.longest)


def _child(fn: Recluster, settings: Settings, conn: Any) -> None:
    """Entry point of the recluster process: log to stderr like the daemon, send the outcome.
    Ctrl-C reaches the whole process group: the daemon decides when this child stops."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s recluster: %(message)s")
    conn.send(_run(fn, settings))
    conn.close()


class BackgroundRecluster:
    """One recluster at a time, beside the daemon's loop."""

    def __init__(self, fn: Recluster, settings: Settings, *, in_process: bool = True) -> None:
        self.fn = fn
        self.settings = settings
        self.in_process = in_process
        self._started = 0.0
        self._proc: Any = None
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._result: _Result | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None or self._thread is not None

    @property
    def pid(self) -> int | None:
        """The child process's id while one runs (benchmarks measure its memory)."""
        return None if self._proc is None else int(self._proc.pid)

    def start(self) -> None:
        assert not self.running
        self._started = time.monotonic()
        self._result = None
        if self.in_process:
            ctx = multiprocessing.get_context("spawn")  # no copy of the daemon's memory
            parent, child = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(target=_child, args=(self.fn, self.settings, child),
                                     name="faceidx-recluster", daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
        else:
            def target() -> None:
                self._result = _run(self.fn, self.settings)

            self._thread = threading.Thread(target=target, name="recluster", daemon=True)
            self._thread.start()

    def poll(self) -> Outcome | None:
        """The outcome once the run ended (then the runner is free again), else None."""
        if self._thread is not None:
            if self._thread.is_alive():
                return None
            self._thread = None
            return self._outcome(*(self._result or (False, "no result", False, 0.0, 0.0)))
        if self._proc is None:
            return None
        result: _Result
        if self._conn.poll():
            try:
                result = self._conn.recv()
            except EOFError:
                result = (False, "the recluster process ended without a result", False, 0.0,
                          0.0)
            self._proc.join(STOP_GRACE)
        elif self._proc.is_alive():
            return None
        else:
            result = (False, f"the recluster process died (exit code {self._proc.exitcode})",
                      False, 0.0, 0.0)
        self._close_proc()
        return self._outcome(*result)

    def stop(self) -> None:
        """End a run in progress (the daemon is stopping): terminate the child, or wait for
        the thread (a thread cannot be interrupted; it holds no lock between its steps)."""
        if self._proc is not None:
            if self._proc.is_alive():
                log.info("stopping the recluster in progress (pid %d)", self._proc.pid)
                self._proc.terminate()
                self._proc.join(STOP_GRACE)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join()
            self._close_proc()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _close_proc(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def _outcome(self, ok: bool, summary: str, import_error: bool, catalog_seconds: float,
                 catalog_longest: float) -> Outcome:
        return Outcome(ok=ok, summary=summary, seconds=time.monotonic() - self._started,
                       import_error=import_error, catalog_seconds=catalog_seconds,
                       catalog_longest=catalog_longest)


__all__ = ["BackgroundRecluster", "CatalogClock", "Outcome", "Recluster", "default_recluster"]
