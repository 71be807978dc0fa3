"""The watch daemon: new photos become searchable faces on their own, and nothing is lost.

`WatchDaemon(settings, model, roots).run()`:
1. takes the ingest lock of the home (one daemon or `index` per home) and opens the store with
   `keep_open=False`, so the DuckDB file is open only while a unit of work runs and other
   processes (query, status, cluster commands, recluster) use it in between;
2. starts the file observer first, then catches up (the same incremental comparison as
   `index`), so nothing that happens during the catch-up is missed;
3. loops: applies file events in order (moves and renames change paths, never re-embed;
   deletions forget images), and indexes files in batches of `settings.batch_size` once their
   size and mtime have stayed put for `settings.watch_settle` seconds (a half-copied file is
   never looked at, so it is never recorded as broken);
4. assigns each new face online (indexer.assign), lets faces left over found new people
   (indexer.online), and once the index grew by `recluster_growth` or by `recluster_every`
   faces (at most once per `recluster_interval` seconds, indexer.recluster.recluster_due)
   starts a full recluster BESIDE ingest, in a child process by default
   (indexer.watch_recluster): indexing and online assignment go on meanwhile, and the
   recluster's one write transaction reconciles what happened meanwhile;
5. on `stop()` (SIGINT/SIGTERM in the CLI) finishes the batch in hand, applies queued moves and
   deletions, ends a recluster in progress (its result is not written), saves FAISS, releases
   the lock and returns.

A run killed at any point leaves a consistent catalog (each batch is one transaction); the next
run's catch-up completes the work and readers repair the FAISS file from the catalog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from .assign import Assigner
from .locks import IngestLock
from .models import FaceModel
from .pipeline import Indexer, Progress, resolve_roots, scan
from .settings import Settings
from .store import Store
from .types import IndexSummary, Matrix
from .watch_events import (
    EventHandler,
    ObserverFactory,
    Op,
    OpQueue,
    PathFilter,
    Watching,
)
from .watch_ops import FileOps, _Pending, _stat
from .watch_recluster import BackgroundRecluster, Outcome, Recluster, default_recluster

log = logging.getLogger(__name__)

GENERATION_KEY = "clusters_generation"
"""Meta key a recluster or a user's correction changes; the daemon then reloads centroids."""

IDLE_WAIT = 1.0
"""Longest sleep of the loop when nothing is queued (stop and timers are checked this often)."""
LOCK_INFO_EVERY = 1.0
"""Seconds between updates of the queue size that `faceidx status` shows."""
RETRY_AFTER = 5.0
"""Seconds before a batch that failed unexpectedly (e.g. catalog busy too long) is retried."""


@dataclass
class WatchReport:
    """What a daemon run did (the CLI logs it at exit; tests read it)."""

    summary: IndexSummary = field(default_factory=IndexSummary)
    batches: int = 0
    reclusters: int = 0
    recluster_errors: int = 0
    moves: int = 0
    assignment_reloads: int = 0
    mode: str = "none"


class WatchDaemon(FileOps):
    """Follows folders and keeps the index of one home in step with them."""

    def __init__(self, settings: Settings, model: FaceModel, roots: Sequence[Path | str], *,
                 recluster: Recluster | None = default_recluster,
                 observer_factory: ObserverFactory | None = None,
                 polling: bool = False, progress: Progress | None = None,
                 recluster_in_process: bool | None = None) -> None:
        self.settings = settings
        self.progress = progress
        """Told the catch-up's file count, then each batch of it indexed (stderr in the CLI)."""
        self._catch_up_left = 0
        self.model = model
        self.roots = resolve_roots(roots)
        self._recluster = None if recluster is None else BackgroundRecluster(
            recluster, settings, in_process=_picklable(recluster) if recluster_in_process is None
            else recluster_in_process)
        self.recluster_done = threading.Event()
        """Set each time a background recluster ended (tests wait on it)."""
        self.observer_factory = observer_factory
        self.polling = polling
        self.report = WatchReport()
        self.ready = threading.Event()
        """Set once the observer runs and the catch-up scan has queued its work."""
        self.idle = threading.Event()
        """Set while nothing is queued or waiting to settle (cleared by new events)."""
        self._stop = threading.Event()
        self._ops = OpQueue()
        self._pending: dict[str, _Pending] = {}
        self._store: Store | None = None
        self._indexer: Indexer | None = None
        self._assigner: Assigner | None = None
        self._lock: IngestLock | None = None
        self._watching: Watching | None = None
        self._generation: str | None = None
        self._faces_since_recluster = 0
        self._faces_at_recluster = 0
        self._last_recluster = float("-inf")
        self._lock_info: tuple[int, str] = (-1, "")
        self._lock_info_at = 0.0
        self._retry_at = 0.0

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the daemon to finish the batch in hand and return (safe from any thread)."""
        self._stop.set()
        self._ops.arrived.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def queued(self) -> int:
        return len(self._pending) + len(self._ops)

    @property
    def mode(self) -> str:
        return self._watching.mode if self._watching is not None else "none"

    def run(self) -> WatchReport:
        """Catch up, then follow the folders until stop(); returns what was done."""
        settings = self.settings
        with IngestLock(settings.home, "faceidx watch") as lock:
            self._lock = lock
            store = Store.open(settings, self.model.info, keep_open=False)
            self._store = store
            try:
                self._assigner = Assigner(store, settings)
                self._generation = store.get_meta(GENERATION_KEY)
                self._faces_at_recluster = store.counts().faces
                with Indexer(store, self.model, settings,
                             on_faces_added=self._on_faces_added) as indexer:
                    self._indexer = indexer
                    self._run_loop()
            finally:
                if self._recluster is not None:
                    self._recluster.stop()
                if self._watching is not None:
                    self._watching.stop()
                store.close()  # saves the FAISS file
                self.report.mode = self.mode
                log.info("watch stopped: %s", _summary_line(self.report))
        return self.report

    # ------------------------------------------------------------------ the loop
    def _run_loop(self) -> None:
        paths = PathFilter(self.roots, self.settings.home.resolve())
        handler = EventHandler(self._ops, paths)
        self._watching = Watching(self.roots, handler,
                                  poll_interval=self.settings.watch_poll_interval,
                                  observer_factory=self.observer_factory,
                                  polling=self.polling)
        self._watching.start()
        self.report.mode = self._watching.mode
        self._catch_up()
        self._update_lock(force=True)
        self.ready.set()
        log.info("watching %d folder(s); %d file(s) to index from the catch-up",
                 len(self.roots), len(self._pending))
        busy = False
        while not self._stop.is_set():
            if not busy:  # after a batch, look again at once: more may be ready
                self._ops.arrived.wait(self._wait_time())
            if self._stop.is_set():
                break
            busy = self._step()
        self._apply_ops(self._ops.drain())  # moves and deletions are quick: flush them
        self._save_faiss()

    def _step(self) -> bool:
        """One turn of the loop; True when a batch of files was processed."""
        ops = self._drain_debounced()
        if ops:
            self.idle.clear()
            self._apply_ops(ops)
        assert self._watching is not None
        if self._watching.check():
            self.report.mode = self._watching.mode
            self._catch_up()
        ready = self._settled() if time.monotonic() >= self._retry_at else []
        if ready:
            self._process(ready)
        if not self._pending and not len(self._ops):
            self._save_faiss()
            self.idle.set()
        self._maybe_recluster()
        self._update_lock()
        return bool(ready)

    def _wait_time(self) -> float:
        if not self._pending:
            return IDLE_WAIT
        now = time.monotonic()
        due = min(p.since for p in self._pending.values()) + self.settings.watch_settle
        due = max(due, self._retry_at)
        return min(IDLE_WAIT, max(0.0, due - now))

    def _drain_debounced(self) -> list[Op]:
        """Everything queued, after the burst it belongs to has been quiet for a moment."""
        ops = self._ops.drain()
        if not ops:
            return ops
        deadline = time.monotonic() + 10 * self.settings.watch_debounce
        while time.monotonic() < deadline and not self._stop.is_set():
            if not self._ops.arrived.wait(self.settings.watch_debounce):
                break
            ops.extend(self._ops.drain())
        return ops

    # ------------------------------------------------------------------ catching up
    def _catch_up(self) -> None:
        """Queue what changed on disk since the index last saw it; forget what is gone."""
        assert self._store is not None and self._indexer is not None
        disk = scan(self.roots, skip=[self.settings.home.resolve()])
        known = self._store.images_under(self.roots)
        gone = [p for p in known if p not in disk]
        if gone:
            log.info("catch-up: %d indexed file(s) are gone", len(gone))
            self._indexer.remove(gone, self.report.summary)
        now = time.monotonic()
        wall = time.time()
        queued = 0
        for key, f in disk.items():
            rec = known.get(key)
            if rec is not None and rec.size == f.size and rec.mtime == f.mtime:
                continue
            # A file untouched for the settle period is complete; a fresh one must settle.
            settled = wall - f.mtime >= self.settings.watch_settle
            self._pending[key] = _Pending(f.size, f.mtime, float("-inf") if settled else now)
            queued += 1
        log.info("catch-up: %d file(s) on disk, %d new or changed", len(disk), queued)
        if queued and self.progress is not None:
            self.progress.start(queued, "catch-up")
            self._catch_up_left = queued

    # ------------------------------------------------------------------ indexing
    def _settled(self) -> list[Path]:
        """Up to one batch of files whose size and mtime stayed put for the settle period."""
        now = time.monotonic()
        settle = self.settings.watch_settle
        ready: list[Path] = []
        vanished: list[str] = []
        restarted: dict[str, _Pending] = {}
        for key, entry in self._pending.items():  # oldest first; stops after one batch
            if now - entry.since < settle:
                continue
            size, mtime = _stat(key)
            if size is None:
                vanished.append(key)  # its deletion event handles the catalog
            elif (size, mtime) != (entry.size, entry.mtime):
                restarted[key] = _Pending(size, mtime, now)  # still being written
            else:
                ready.append(Path(key))
                if len(ready) >= max(1, self.settings.batch_size):
                    break
        for key in vanished:
            del self._pending[key]
        self._pending.update(restarted)
        return ready

    def _process(self, ready: list[Path]) -> None:
        """Index one batch (a single committed transaction) of settled files."""
        store, indexer = self._store, self._indexer
        assert store is not None and indexer is not None
        keys = [str(p) for p in ready]
        try:
            known = store.images_at(keys)
            todo = []
            for path in ready:
                rec = known.get(str(path))
                entry = self._pending[str(path)]
                if rec is None or (rec.size, rec.mtime) != (entry.size, entry.mtime):
                    todo.append(path)
            if todo:
                before = self.report.summary.faces_added
                indexer.process(todo, self.report.summary, known=known)
                added = self.report.summary.faces_added - before
                self._faces_since_recluster += added
                self.report.batches += 1
                log.info("indexed %d file(s): %d new face(s); %d queued", len(todo), added,
                         len(self._pending) - len(ready))
                store.drop_mapped_pages()  # what its searches mapped of the exact vectors
        except Exception:
            # Never die of one batch (e.g. the catalog busy for longer than lock_timeout):
            # keep the files queued, rebuild the centroids from the catalog, and retry later.
            log.exception("indexing a batch failed; retrying in %.0f s", RETRY_AFTER)
            self._retry_at = time.monotonic() + RETRY_AFTER
            self._reload_assigner()
            return
        for key in keys:
            self._pending.pop(key, None)
        if self._catch_up_left and self.progress is not None:
            done = min(len(keys), self._catch_up_left)
            self._catch_up_left -= done
            self.progress.advance(done)

    def _on_faces_added(self, con: duckdb.DuckDBPyConnection, face_ids: list[int],
                        vectors: Matrix) -> None:
        """Pipeline hook, inside the batch's transaction: assign against current clusters.

        A recluster or correction made by another process since the last batch changes the
        generation; the centroids are then re-read within this same transaction."""
        assert self._store is not None and self._assigner is not None
        generation = self._store.get_meta(GENERATION_KEY)
        if generation != self._generation:
            log.info("clusters changed (generation %s -> %s); reloading centroids",
                     self._generation, generation)
            self._assigner.reload()
            self._generation = generation
            self.report.assignment_reloads += 1
        self._assigner.on_faces_added(con, face_ids, np.asarray(vectors))

    def _reload_assigner(self) -> None:
        assert self._store is not None and self._assigner is not None
        try:
            self._generation = self._store.get_meta(GENERATION_KEY)
            self._assigner.reload()
            self.report.assignment_reloads += 1
        except Exception:
            log.exception("could not reload cluster centroids")

    # ------------------------------------------------------------------ recluster
    def _maybe_recluster(self) -> None:
        """Start a background recluster when the index grew enough (see
        indexer.recluster.recluster_due); take in its result once it ended. Indexing goes on
        meanwhile: faces that arrive are assigned online and reconciled by its write."""
        runner = self._recluster
        if runner is None:
            return
        if runner.running:
            outcome = runner.poll()
            if outcome is not None:
                self._recluster_ended(outcome)
            return
        if self._faces_since_recluster == 0:
            return
        from .recluster import recluster_due

        drained = not self._pending and not len(self._ops)
        why = recluster_due(self._faces_since_recluster, self._faces_at_recluster,
                            time.monotonic() - self._last_recluster, self.settings,
                            drained=drained)
        if why is None or self._stop.is_set():
            return
        log.info("reclustering in the background (%s): %s",
                 "child process" if runner.in_process else "thread", why)
        self._faces_at_recluster += self._faces_since_recluster
        self._faces_since_recluster = 0  # faces from now on count towards the next one
        runner.start()
        self._update_lock(force=True)

    def _recluster_ended(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.report.reclusters += 1
            log.info("recluster done in %.1f s (it held the catalog %.1f s, %.1f s at most at "
                     "once)%s", outcome.seconds, outcome.catalog_seconds,
                     outcome.catalog_longest, f": {outcome.summary}" if outcome.summary else "")
        elif outcome.import_error:
            log.warning("periodic recluster is not available (%s); run `faceidx recluster` "
                        "yourself", outcome.summary)
            self._recluster = None
        else:
            log.error("periodic recluster failed (%s); will try again later", outcome.summary)
            self.report.recluster_errors += 1
        self._last_recluster = time.monotonic()
        self._reload_assigner()
        self._update_lock(force=True)
        self.recluster_done.set()

    @property
    def recluster_running(self) -> bool:
        return self._recluster is not None and self._recluster.running

    @property
    def recluster_pid(self) -> int | None:
        """The recluster child's process id while one runs."""
        return None if self._recluster is None else self._recluster.pid

    # ------------------------------------------------------------------ bookkeeping
    def _save_faiss(self) -> None:
        assert self._store is not None
        try:
            self._store.save_faiss()
        except OSError:
            log.exception("could not save the FAISS index (readers rebuild it from the catalog)")

    def _update_lock(self, *, force: bool = False) -> None:
        """Tell `faceidx status` how many files wait (and whether a recluster runs), when that
        changed."""
        if self._lock is None:
            return
        state = "watching; reclustering in the background" if self.recluster_running else "watching"
        queued = self.queued
        now = time.monotonic()
        changed = (queued, state) != self._lock_info
        if not force and (not changed or now - self._lock_info_at < LOCK_INFO_EVERY) \
                and not (changed and queued == 0):
            return
        try:
            self._lock.update(queued=queued, mode=self.mode,
                              state=state, roots=[str(r) for r in self.roots])
        except OSError:
            log.debug("could not update the lock info file", exc_info=True)
        self._lock_info = (queued, state)
        self._lock_info_at = now


def _picklable(fn: Any) -> bool:
    """Whether `fn` can run in a spawned child (a module-level function can; a closure not)."""
    import pickle

    try:
        pickle.dumps(fn)
    except Exception:  # noqa: BLE001 - any failure means: run it on a thread
        return False
    return True


def _summary_line(report: WatchReport) -> str:
    s = report.summary
    return (f"new {s.new}, changed {s.changed}, moved {s.moved}, copied {s.copied}, "
            f"removed {s.removed}, failed {s.failed}; faces added {s.faces_added}, removed "
            f"{s.faces_removed}; {report.batches} batches, {report.reclusters} reclusters "
            f"({report.mode})")


__all__ = ["GENERATION_KEY", "WatchDaemon", "WatchReport", "default_recluster"]
