"""What `faceidx status`, `people` and `history` show, answered from a small file beside the
catalog when it is current, so they need not import DuckDB (about 0.1 s of a 0.4 s budget)
nor attach a catalog of a million faces (issue 11).

The catalog stays the truth. `summary.json` in the index home holds the counts, the model,
the first PEOPLE_ROWS people, the newest HISTORY_ROWS changes and up to FAILURE_ROWS failed
files, with the catalog's change stamp (`change_stamp`: DuckDB's two file headers and the
write-ahead log's size; every commit changes it) at the moment they were read. A command
answers from the file only while the catalog's stamp still equals the recorded one; a missing,
stale, unreadable or foreign file, or a request beyond what it holds (`people --limit 0`),
reads the catalog as before, and that read writes the file again.

Who writes it: every writer, as it lets the catalog go (`Upkeep`, driven by the store: the
daemon after each batch, `name` and the other corrections, a recluster, the web app's
actions), so the first read after a write finds it current. Holding the catalog for writing
(no other process can commit), it checkpoints (so closing the connection changes no header),
reads the summary, takes the stamp and writes the file; within one process, its commits and
this step share one lock (`commit_lock`), so no other connection commits in between. The one
count that scans every face (photos with no face) is carried forward from the summary it
found current when it began, when no face was removed since (`_counts_after`).

A reader that finds the file stale (a writer that died, a catalog written by an older
faceidx or by DuckDB's own shell) reads the catalog and writes the file, like a seqlock:
the stamp is taken before the catalog is opened and again after it is closed, and the file
is written only when both agree (no commit happened in between, so what was read is the
state the stamp names).

This module imports neither DuckDB nor the store until the catalog has to be read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .settings import Settings

try:  # hashlib would load OpenSSL too (several ms of every light command) for this one hash
    from _blake2 import blake2b
except ImportError:  # a Python built without it
    from hashlib import blake2b

log = logging.getLogger(__name__)

FILE = "summary.json"
FORMAT = 2
PEOPLE_ROWS = 100  # `faceidx people`'s default --limit
HISTORY_ROWS = 50  # `faceidx history`'s default --limit
FAILURE_ROWS = 1000  # more failed files than this: `status --failures` reads the catalog
KEYS = {"stamp", "counts", "model", "schema_version", "failures", "people", "people_total",
        "history", "next_face_id", "next_image_id"}


def change_stamp(path: Path) -> tuple[int, ...]:
    """Changes with every commit to the catalog file at `path`, read without opening it (a
    reader keeps what it read until this changes). DuckDB appends each commit to the
    write-ahead log (`path.wal`, which only grows until a checkpoint), and each checkpoint
    writes one of the file's two database headers (at 4 and 8 KiB, in turn) with a higher
    iteration count: the headers' bytes and the log's size tell every commit apart. Sizes,
    mtimes and inodes say when a file was replaced (mtimes alone tick too coarsely: two
    commits a few ms apart, of one size, can share one).

    Safe in a process that has the catalog open through DuckDB (the web app's threads, `watch
    --serve`): the headers are read through a descriptor kept open for the life of the
    process, because closing any descriptor of a file drops every POSIX lock the process
    holds on it, DuckDB's included, and another process could then write the file under it."""
    out: list[int] = []
    try:
        st, headers = _headers(path)
        out += [st.st_size, st.st_mtime_ns, st.st_ino, int.from_bytes(headers, "little")]
    except FileNotFoundError:
        out += [0, 0, 0, 0]
    try:
        st = path.with_name(path.name + ".wal").stat()
        out += [st.st_size, st.st_mtime_ns, st.st_ino]
    except FileNotFoundError:
        out += [0, 0, 0]
    return tuple(out)


_kept_open: dict[str, tuple[int, int]] = {}  # catalog path -> (inode, descriptor)
_kept_lock = threading.Lock()
KEPT_OPEN = 32
"""Descriptors kept (one per catalog looked at; a test session sees many): beyond this many,
the least recently looked at is closed. A replaced catalog's old descriptor is never closed
(this process may still hold DuckDB's lock on that file)."""


def _headers(path: Path) -> tuple[os.stat_result, bytes]:
    """The catalog's stat and a hash of its two database headers."""
    if not hasattr(os, "pread"):  # Windows: no POSIX locks to drop
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            fh.seek(4096)
            return st, blake2b(fh.read(8192), digest_size=8).digest()
    inode = os.stat(path).st_ino
    key = str(path)
    with _kept_lock:
        kept = _kept_open.pop(key, None)
        if kept is None or kept[0] != inode:  # first look, or the file was replaced
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            kept = (os.fstat(fd).st_ino, fd)
            while len(_kept_open) >= KEPT_OPEN:
                os.close(_kept_open.pop(next(iter(_kept_open)))[1])
        _kept_open[key] = kept  # most recently looked at last
    st = os.fstat(kept[1])
    return st, blake2b(os.pread(kept[1], 8192, 4096), digest_size=8).digest()


# ---------------------------------------------------------------------- the file
def _path(settings: Settings) -> Path:
    return settings.home / FILE


def load(settings: Settings) -> dict[str, Any] | None:
    """The summary if it describes the catalog as it is now, else None (read the catalog)."""
    return _load_at(settings, change_stamp(settings.catalog_path))


def refresh(settings: Settings) -> dict[str, Any] | None:
    """Read the summary from the catalog, and write it beside the catalog when no commit
    happened while it was read (the stamps before and after agree). None for a catalog of
    an older schema (the use cases then read it as they always did)."""
    from .store import SCHEMA_VERSION, Store

    before = change_stamp(settings.catalog_path)
    store = Store.open(settings, read_only=True)
    try:
        with store.snapshot():
            data = _read(store) if store.schema_version() == SCHEMA_VERSION else None
    finally:
        store.close(save=False)
    if data is None:
        return None
    after = change_stamp(settings.catalog_path)
    if before == after and before[2] != 0:
        data["stamp"] = list(after)
        _save(settings, data)
    return data


def _read(store: Any, counts: Any = None) -> dict[str, Any]:
    counts = counts or store.counts()
    model = store.catalog_model()
    failures = store.failures() if counts.failed <= FAILURE_ROWS else None
    people, total = store.people_top(PEOPLE_ROWS)
    return {
        "format": FORMAT,
        "counts": asdict(counts),
        "model": None if model is None else asdict(model),
        "schema_version": store.schema_version(),
        "failures": None if failures is None else [list(f) for f in failures],
        "people": [asdict(p) for p in people],
        "people_total": total,
        "history": [asdict(c) for c in store.history(HISTORY_ROWS)],
        "next_face_id": store.get_meta("next_face_id"),
        "next_image_id": store.get_meta("next_image_id"),
    }


# ---------------------------------------------------------------------- writers
_commit_locks: dict[str, threading.Lock] = {}


def commit_lock(path: Path) -> threading.Lock:
    """The lock a writer of the catalog at `path` holds around each commit, and around
    writing the summary (one per catalog in this process)."""
    with _kept_lock:
        return _commit_locks.setdefault(str(path), threading.Lock())


class Upkeep:
    """One writer's part in keeping summary.json current: the store calls `began` at each
    write transaction, commits under `lock`, and calls `write` before it closes the
    connection (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = commit_lock(settings.catalog_path)
        self.since: tuple[int, ...] | None = None  # the stamp when this connection first wrote
        self.due = False  # committed since
        # the clusters whose names alone the commits since changed (None: anything may have)
        self.renamed: set[int] | None = set()
        self.last: tuple[int, ...] | None = None  # the stamp after this writer's last commit

    def began(self) -> None:
        if self.since is None:
            self.since = self.last = change_stamp(self.settings.catalog_path)
            self.renamed = set()

    def committing(self) -> None:
        """Just before a commit, under `lock`: had another connection of this process
        committed since this writer began or last committed, the summary is read again."""
        if change_stamp(self.settings.catalog_path) != self.last:
            self.renamed = None

    def committed(self, names_of: Any = None) -> None:
        """Just after a commit, under `lock`; `names_of`: the clusters whose names are all it
        changed of what the summary shows (besides the history), else None."""
        self.due = True
        self.last = change_stamp(self.settings.catalog_path)
        if names_of is None or self.renamed is None:
            self.renamed = None
        else:
            self.renamed |= {int(c) for c in names_of}

    def write(self, store: Any, con: Any) -> None:
        """Bring the summary up to date with what this writer committed; the catalog stays
        held. On any failure the file is left stale, which readers notice."""
        since, due, renamed = self.since, self.due, self.renamed
        self.since, self.due, self.renamed, self.last = None, False, set(), None
        if not due:
            return
        path = self.settings.catalog_path
        with self.lock:
            try:
                con.execute("CHECKPOINT")  # closing the connection then writes nothing
                if store.schema_version() != _schema_version():
                    return
                before = _load_at(self.settings, since)
                data = None
                if renamed is not None and before is not None:
                    data = _renamed(store, before, renamed)
                if data is None:
                    data = _read(store, _counts_after(store, before))
                data["stamp"] = list(change_stamp(path))
            except Exception as exc:  # noqa: BLE001 - a summary is never worth a failed write
                log.debug("summary of %s not written: %s", path, exc)
                return
            _save(self.settings, data)


def _schema_version() -> int:
    from .store import SCHEMA_VERSION

    return SCHEMA_VERSION


def _load_at(settings: Settings, stamp: tuple[int, ...] | None) -> dict[str, Any] | None:
    """The summary if it describes the catalog as of `stamp` (a missing, unreadable or
    foreign file, or one of another format or another state: None)."""
    if stamp is None:
        return None
    try:
        data = json.loads(_path(settings).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not data.keys() >= KEYS:
        return None
    return data if data.get("stamp") == list(stamp) else None


def _people_key(row: dict[str, Any]) -> tuple[bool, int, int]:
    """Where `people()` puts a row: named first, then the largest, then by cluster id."""
    return row["name"] is None, -int(row["size"]), int(row["cluster_id"])


def _renamed(store: Any, before: dict[str, Any], renamed: set[int]) -> dict[str, Any] | None:
    """The summary after commits that changed only the names of clusters `renamed` (and the
    history), from `before` (a true summary of the catalog before them): those clusters'
    rows read again and put in their places, the people counted and the history read again.
    A cluster `before` lists changed only its name: its row is `before`'s with the name read
    again (its medoid's photo and box are not looked up again among a million faces).
    None when that cannot tell the first PEOPLE_ROWS rows (a renamed cluster left them and
    another, not in `before`, may take its place) or one of the clusters is empty (whether
    an empty cluster is listed depends on its name): read everything then."""
    old = before["people"]
    listed = {int(r["cluster_id"]): r for r in old if int(r["cluster_id"]) in renamed}
    names = store.cluster_names() if listed else {}
    fresh = [{**r, "name": names.get(cid)} for cid, r in listed.items()]
    if len(listed) < len(renamed):
        fresh += [asdict(r) for r in store.people_rows(sorted(renamed - set(listed)))]
    if len(fresh) != len(renamed) or any(int(r["size"]) <= 0 for r in fresh):
        return None
    total = int(before["people_total"])
    rows = sorted([r for r in old if int(r["cluster_id"]) not in renamed] + fresh,
                  key=_people_key)
    if len(old) < total:
        if not old:
            return None  # cut at PEOPLE_ROWS: the rows beyond the last one are unknown
        last = _people_key(old[-1])
        rows = [r for r in rows if _people_key(r) <= last]
        if len(rows) < len(old):
            return None
    elif len(rows) != total:  # every row was there, these clusters' among them
        return None
    counts = {**before["counts"], "people": store.people_count()}
    return {**before, "counts": counts, "people": json.loads(json.dumps(rows[:PEOPLE_ROWS])),
            "history": [asdict(c) for c in store.history(HISTORY_ROWS)]}


def _counts_after(store: Any, before: dict[str, Any] | None) -> Any:
    """The catalog's counts, the one that scans every face (read photos with no face)
    carried forward from `before` (a true summary of an earlier state of this catalog) when
    no face was removed since: then the photos with a face are those of `before` and those
    that gained their first face among the faces added since (ids only grow: the faces
    numbered from `before`'s face counter on; none removed when the face count grew by as
    many; a face never changes photo). Otherwise every face is counted."""
    try:
        was = before["counts"] if before is not None else None
        face_was, image_was = int(before["next_face_id"]), int(before["next_image_id"])
    except (TypeError, ValueError, KeyError):
        was = None
    if was is None:
        return store.counts()
    now = store.counts(no_face=0)
    face_now = store.get_meta("next_face_id")
    added = int(face_now) - face_was if face_now is not None else -1
    if added < 0 or now.faces - int(was["faces"]) != added:
        return store.counts()
    with_face = int(was["ok"]) - int(was["no_face"])
    if added:
        with_face += store.photos_first_faced(face_was, image_was)
    return replace(now, no_face=now.ok - with_face)


def _save(settings: Settings, data: dict[str, Any]) -> None:
    from .store.files import replacing

    try:
        with replacing(_path(settings), prefix=".summary-") as fh:
            fh.write(json.dumps(data, separators=(",", ":")).encode())
    except OSError as exc:  # a home we may read but not write: answer anyway
        log.debug("could not write %s: %s", _path(settings), exc)


def _summary(settings: Settings) -> dict[str, Any] | None:
    if not settings.catalog_path.exists():
        from .errors import IndexNotFound

        raise IndexNotFound(
            f"no index at {settings.home}; run `faceidx index PATH` first "
            "(or point --home / FACEIDX_HOME at an existing index)")
    data = load(settings)
    return data if data is not None else refresh(settings)


# ---------------------------------------------------------------------- the use cases
def status(settings: Settings, *, with_failures: bool = False) -> dict[str, Any]:
    """As `service.status` (the same keys and values), from the summary when it is current."""
    data = _summary(settings)
    if data is None:
        from . import service

        return service.status(settings, with_failures=with_failures)
    failures = data["failures"] if with_failures else None
    if with_failures and failures is None:  # too many to keep beside the catalog
        from . import service

        return service.status(settings, with_failures=True)
    return status_fields(settings, data["counts"], data["model"], data["schema_version"],
                         failures)


def status_fields(settings: Settings, counts: dict[str, int], model: dict[str, Any] | None,
                  schema_version: int, failures: list[Any] | None) -> dict[str, Any]:
    """What `faceidx status` shows, from the catalog's counts (Counts as a dict), recorded
    model and schema version, and its failed files as (path, reason) when asked for."""
    from .locks import IngestLock

    out: dict[str, Any] = {
        "home": str(settings.home),
        "images": counts["images"],
        "images_ok": counts["ok"],
        "images_no_face": counts["no_face"],
        "faces": counts["faces"],
        "clusters": counts["clusters"],
        "people": counts["people"],
        "unassigned": counts["unassigned"],
        "failed": counts["failed"],
        "model": model,
        "schema_version": schema_version,
    }
    if failures is not None:
        out["failures"] = [{"path": p, "reason": r} for p, r in failures]
    out["indexer_running"] = IngestLock.holder(settings.home)
    return out


def people_top(settings: Settings, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """As `service.people_top` (rows as dicts), from the summary when it holds them all."""
    data = _summary(settings)
    if data is None:
        from . import service

        return service.people_top(settings, limit)
    rows, total = data["people"], int(data["people_total"])
    if limit is not None and (limit <= len(rows) or len(rows) == total):
        return rows[:limit], total
    if limit is None and len(rows) == total:
        return rows, total
    from . import service

    return service.people_top(settings, limit)


def history(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """As `corrections.history` (each change as a dict), from the summary when it holds
    them all."""
    data = _summary(settings)
    rows = [] if data is None else data["history"]
    if data is not None and (limit <= len(rows) or len(rows) < HISTORY_ROWS):
        return rows[:limit]
    from . import corrections

    return [asdict(c) for c in corrections.history(settings, limit)]
