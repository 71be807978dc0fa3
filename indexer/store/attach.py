"""Fast reads for a long-running reader (the web app): the catalog attached to a kept DuckDB.

Opening the catalog file costs a new DuckDB instance each time (tens of ms, and more when the
machine is busy), and a reader must not keep the file open: a read-only connection holds a
shared lock that stops the watch daemon, in another process, from writing. An
`AttachedCatalog` keeps one in-memory DuckDB instance for the life of the reader and ATTACHes
the catalog read-only while at least one read is in progress, DETACHing it (which drops the
lock) as soon as the last one ends: each read sees the daemon's last commit, and the daemon
waits at most for the read in hand. Attaching costs a few ms.

Not for a process that also writes the catalog (`watch --serve`): DuckDB refuses one file
attached to two instances of one process, so such a process reads through plain connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ..errors import IndexBusy
from ..summary import change_stamp
from .engine import duckdb

ALIAS = "catalog"
__all__ = ["ALIAS", "AttachedCatalog", "change_stamp", "current", "reads_through"]

_current: ContextVar[AttachedCatalog | None] = ContextVar("faceidx_attached_catalog",
                                                          default=None)
_waits: ContextVar[list[float] | None] = ContextVar("faceidx_catalog_waits", default=None)


class AttachedCatalog:
    """One catalog file read through a kept in-memory DuckDB instance (thread-safe)."""

    def __init__(self, path: Path, lock_timeout: float) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._users = 0
        self.attaches = 0  # how many times the file was attached (one per request that read)

    def acquire(self) -> duckdb.DuckDBPyConnection | None:
        """A cursor on the attached catalog (attached now if no read is in progress); waits
        up to lock_timeout while another process writes the file. None while this process
        itself has the file open for writing (an action of the web app): read as it does."""
        with self._lock:
            if self._db is None:
                self._db = duckdb.connect()
            if self._users == 0 and not self._attach():
                return None
            self._users += 1
            cursor = self._db.cursor()
        try:
            cursor.execute(f"USE {ALIAS}")
        except BaseException:
            self.release(cursor)
            raise
        return cursor

    def release(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Done with `cursor`; the last one out detaches the file (the daemon may write)."""
        cursor.close()
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._db is not None:
                self._db.execute(f"DETACH {ALIAS}")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._users = 0

    def _attach(self) -> bool:
        assert self._db is not None
        started = time.monotonic()
        deadline = started + self.lock_timeout
        delay = 0.005
        quoted = str(self.path).replace("'", "''")
        while True:
            try:
                self._db.execute(f"ATTACH '{quoted}' AS {ALIAS} (READ_ONLY)")
                self.attaches += 1
                waits = _waits.get()
                if waits is not None:
                    waits.append(time.monotonic() - started)
                return True
            except duckdb.ResourceInUseException:  # open in this process by another instance
                return False
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() > deadline:
                    raise IndexBusy(f"{self.path}: another faceidx process kept the catalog "
                                    f"busy for {self.lock_timeout:.0f} s; try again") from exc
            time.sleep(delay)  # the daemon writes its batch in hand; poll often, then read
            delay = min(delay * 2, 0.02)


@contextmanager
def reads_through(catalog: AttachedCatalog | None) -> Iterator[list[float]]:
    """Within this block (and threads it hands work to), read-only Stores of `catalog.path`
    read through `catalog` instead of opening the file. Yields the list of seconds each
    attachment made in the block took (waiting while another process wrote, mostly)."""
    token = _current.set(catalog)
    waits: list[float] = []
    wait_token = _waits.set(waits)
    try:
        yield waits
    finally:
        _waits.reset(wait_token)
        _current.reset(token)


def current(path: Path) -> AttachedCatalog | None:
    """The AttachedCatalog in effect for this catalog file, if any."""
    catalog = _current.get()
    if catalog is None or catalog.path != Path(path):
        return None
    return catalog
