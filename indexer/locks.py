"""One writer of photos per index home: `index` and `watch` take the ingest lock."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import IndexBusy


class IngestLock:
    """An exclusive, non-blocking lock on an index home, with who holds it in a side file."""

    def __init__(self, home: Path, purpose: str) -> None:
        self.home = home
        self.purpose = purpose
        from filelock import FileLock

        self._lock = FileLock(str(home / "ingest.lock"))
        self._info = home / "ingest.json"

    def __enter__(self) -> IngestLock:
        from filelock import Timeout

        self.home.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self.holder(self.home)
            who = f"{holder.get('purpose', 'faceidx')} (pid {holder.get('pid', '?')})" \
                if holder else "another faceidx process"
            raise IndexBusy(f"{self.home}: {who} is already indexing this home; "
                            "stop it first, or use another --home") from None
        self.update()
        return self

    def update(self, **extra: Any) -> None:
        info = {"pid": os.getpid(), "purpose": self.purpose, "since": self._since(), **extra}
        tmp = self._info.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self._info)

    def _since(self) -> float:
        if not hasattr(self, "_started"):
            self._started = time.time()
        return self._started

    def __exit__(self, *exc: object) -> None:
        self._info.unlink(missing_ok=True)
        self._lock.release()

    @staticmethod
    def holder(home: Path) -> dict[str, Any] | None:
        """Who holds the lock on `home`, or None when nobody does (a stale file is ignored)."""
        if not _held(home / "ingest.lock"):
            return None
        try:
            return dict(json.loads((home / "ingest.json").read_text()))
        except (OSError, ValueError):
            return {}


def _held(path: Path) -> bool:
    """Whether another process holds the lock file (status asks; importing filelock costs more
    than the rest of `faceidx status`, so on POSIX this asks flock, which filelock uses)."""
    try:
        import fcntl
    except ImportError:  # Windows
        from filelock import FileLock, Timeout

        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False
