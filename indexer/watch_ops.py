"""How the watch daemon applies file events: moves change paths in the catalog, new and
changed files join the settle queue, deletions forget images (a mixin of WatchDaemon)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .pipeline import scan
from .watch_events import Op, describe

if TYPE_CHECKING:
    from .pipeline import Indexer
    from .settings import Settings
    from .store import Store
    from .watch import WatchReport

log = logging.getLogger("indexer.watch")


@dataclass
class _Pending:
    """A file waiting to settle: the stat last seen and since when it has not changed."""

    size: int | None
    mtime: float | None
    since: float


class FileOps:
    """The part of WatchDaemon that turns file events into catalog changes and queued files."""

    settings: Settings
    report: WatchReport
    _store: Store | None
    _indexer: Indexer | None
    _pending: dict[str, _Pending]

    def _apply_ops(self, ops: list[Op]) -> None:
        """Apply file events in order: moves change paths in the catalog, new and changed files
        join the settle queue, and deletions (of paths really gone from disk) come last."""
        if not ops:
            return
        assert self._store is not None and self._indexer is not None
        for op in ops:
            log.debug("event: %s", describe(op))
        run: list[Op] = []  # consecutive moves share one transaction
        for op in ops:
            if op.kind == "move":
                run.append(op)
                continue
            if run:
                self._apply_moves(run)
                run = []
            if op.kind == "touch":
                self._touch(op.path)
            elif op.kind == "scan":
                if os.path.isdir(op.path):
                    for key in scan([Path(op.path)], skip=[self.settings.home.resolve()]):
                        self._touch(key)
            elif op.kind == "delete":
                self._drop_pending(op.path, op.is_dir)
        if run:
            self._apply_moves(run)
        deletes = [op for op in ops if op.kind == "delete"]
        if deletes:
            self._apply_deletes(deletes)

    def _touch(self, path: str) -> None:
        size, mtime = _stat(path)
        self._pending[path] = _Pending(size, mtime, time.monotonic())

    def _drop_pending(self, path: str, is_dir: bool) -> None:
        if is_dir:
            prefix = path.rstrip(os.sep) + os.sep
            for key in [k for k in self._pending if k.startswith(prefix)]:
                del self._pending[key]
        self._pending.pop(path, None)

    def _apply_moves(self, moves: list[Op]) -> None:
        store = self._store
        assert store is not None
        to_touch: list[str] = []
        with store.transaction() as con:
            for op in moves:
                if op.is_dir:
                    n = store.move_prefix(con, op.path, op.dest)
                    if n:
                        log.info("moved folder: %s -> %s (%d images)", op.path, op.dest, n)
                    self.report.moves += n
                    self.report.summary.moved += n
                    self._rekey_pending(op.path, op.dest, is_dir=True)
                    continue
                rec = store.images_at_con(con, [op.path]).get(op.path)
                if rec is None:
                    # Not indexed yet (still settling, or never seen): look at it where it is.
                    self._rekey_pending(op.path, op.dest, is_dir=False)
                    to_touch.append(op.dest)
                    continue
                size, mtime = _stat(op.dest)
                store.move_image(con, rec.image_id, op.dest,
                                 size=rec.size if size is None else size,
                                 mtime=rec.mtime if mtime is None else mtime)
                log.info("moved: %s -> %s", op.path, op.dest)
                self.report.moves += 1
                self.report.summary.moved += 1
                self._rekey_pending(op.path, op.dest, is_dir=False)
        for path in to_touch:
            if path not in self._pending:
                self._touch(path)

    def _rekey_pending(self, src: str, dest: str, *, is_dir: bool) -> None:
        if not is_dir:
            if src in self._pending:
                self._pending[dest] = self._pending.pop(src)
            return
        old, new = src.rstrip(os.sep) + os.sep, dest.rstrip(os.sep) + os.sep
        for key in [k for k in self._pending if k.startswith(old)]:
            self._pending[new + key[len(old):]] = self._pending.pop(key)

    def _apply_deletes(self, deletes: list[Op]) -> None:
        store, indexer = self._store, self._indexer
        assert store is not None and indexer is not None
        files = [op.path for op in deletes if not op.is_dir]
        gone = [p for p in store.images_at(files) if not os.path.lexists(p)]
        folders = [Path(op.path) for op in deletes if op.is_dir]
        if folders:
            gone += [p for p in store.images_under(folders) if not os.path.lexists(p)]
        gone = sorted(set(gone))
        if gone:
            removed = indexer.remove(gone, self.report.summary)
            log.info("deleted: %d image(s), %d face(s)", len(gone), removed)


def _stat(path: str) -> tuple[int | None, float | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime
