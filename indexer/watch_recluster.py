"""The watch daemon's recluster, run beside ingest so that indexing never stops for it.

By default it runs in a child process (multiprocessing "spawn"): the snapshot of every vector,
the kNN graph and the spanning tree live and die there, so the daemon's own memory stays that
of an idle daemon. The child opens the catalog only to read its snapshot and to write its
result in one transaction (indexer.recluster.recluster re-reads the catalog in it, so faces
added, deleted or corrected meanwhile are reconciled). A recluster function that cannot be
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


def default_recluster(store: Store, settings: Settings) -> Any:
    """The full recluster of indexer.recluster (imported when first needed)."""
    from .recluster import recluster

    return recluster(store, settings)


def _run(fn: Recluster, settings: Settings) -> tuple[bool, str, bool]:
    """Run `fn` on a Store of its own: (ok, summary or error, whether it was an ImportError)."""
    try:
        store = Store.open(settings, keep_open=True)
        try:
            result = fn(store, settings)
        finally:
            store.close(save=False)
        return True, "" if result is None else str(result), False
    except ImportError as exc:
        return False, str(exc), True
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which goes on
        log.exception("background recluster failed")
        return False, f"{type(exc).__name__}: {exc}", False


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
        self._result: tuple[bool, str, bool] | None = None

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
            ok, summary, imp = self._result or (False, "no result", False)
            return self._outcome(ok, summary, imp)
        if self._proc is None:
            return None
        if self._conn.poll():
            try:
                ok, summary, imp = self._conn.recv()
            except EOFError:
                ok, summary, imp = False, "the recluster process ended without a result", False
            self._proc.join(STOP_GRACE)
        elif self._proc.is_alive():
            return None
        else:
            ok, summary, imp = (False, f"the recluster process died (exit code "
                                f"{self._proc.exitcode})", False)
        self._close_proc()
        return self._outcome(ok, summary, imp)

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

    def _outcome(self, ok: bool, summary: str, import_error: bool) -> Outcome:
        return Outcome(ok=ok, summary=summary, seconds=time.monotonic() - self._started,
                       import_error=import_error)


__all__ = ["BackgroundRecluster", "Outcome", "Recluster", "default_recluster"]
