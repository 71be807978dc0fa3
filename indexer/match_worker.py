"""The catalog side of `faceidx query`, in a child process started before the model loads.

`query` spends most of its own time beside the model importing DuckDB and FAISS, opening the
catalog, mapping the search index and reading the centroids. None of that needs the query
faces, so a child process does it while the parent imports, loads and runs the model (a thread
would not overlap them: imports hold the GIL), then answers with `query.match_in` once the
parent sends the face vectors. On one core this costs what running both in turn costs; on
two or more the catalog side hides behind the model.

The child holds the catalog only while it opens and warms up, and again while it matches; in
between (the model's time: seconds with sface, tens of seconds with facenet's cold torch) a
writer in another process (the watch daemon) may commit. If one did, the child matches on the
catalog and index as they are then, opened afresh, never on what it warmed up.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from typing import TYPE_CHECKING, Any

from .errors import FaceidxError
from .settings import Settings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .query import Verdict
    from .types import Match, ModelInfo

log = logging.getLogger(__name__)


class MatchWorker:
    """A child process that opens the catalog and search index now and matches vectors later
    (once). Use as a context manager; `match` raises what the matching raised."""

    def __init__(self, settings: Settings) -> None:
        # numpy before forking: the parent needs it next (decoding the photo), and a forked
        # child inherits it instead of importing it again (0.1-0.2 s of CPU) beside the model
        import numpy  # noqa: F401

        ctx = multiprocessing.get_context(_start_method())
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(settings, child), daemon=True,
                                 name="faceidx-query-match")
        self._proc.start()
        child.close()
        self._replied = False
        self._model: tuple[str, Any] | None = None  # the child's first message

    def recorded_model(self) -> ModelInfo | None:
        """The model recorded in the catalog, as the child read it on opening it (so that
        the parent never imports DuckDB): None for an index with no model yet."""
        if self._model is None:
            self._model = self._receive()
        status, value = self._model
        if status == "error":
            raise value
        return value

    def _receive(self) -> tuple[str, Any]:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:  # the child died (killed, out of memory)
            self._proc.join(timeout=1)
            raise FaceidxError(f"the query's matching process ended early "
                               f"(exit code {self._proc.exitcode})") from exc

    def match(self, vectors: Any, k: int, photo_hash: str | None
              ) -> tuple[list[list[Match]], list[Verdict | None]]:
        self.recorded_model()  # the child's first message, if not read yet
        try:
            self._conn.send((vectors, k, photo_hash))
        except OSError as exc:
            raise FaceidxError("the query's matching process ended early") from exc
        status, value = self._receive()
        self._replied = True
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        self._conn.close()  # the child sees EOF if it still waits, and ends
        if self._replied:  # it only closes its read-only connection now: no need to wait
            return         # (multiprocessing ends it at exit if it has not)
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def __enter__(self) -> MatchWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


THREADED = frozenset({"faiss", "torch", "onnxruntime", "cv2", "duckdb"})
"""Libraries that start threads (OpenMP pools, ...) a forked child would inherit broken."""


def _start_method() -> str:
    """`fork` (the child starts at once, with this process's imports) where the system has it
    and no threaded library is loaded yet, as in the `query` command; else `spawn`."""
    if "fork" in multiprocessing.get_all_start_methods() and not THREADED & sys.modules.keys():
        return "fork"
    return "spawn"


def _serve(settings: Settings, conn: Connection) -> None:
    """In the child: open and warm up everything matching reads, then answer one request.

    The catalog is read through a kept in-memory DuckDB that attaches the file
    (store.attach.AttachedCatalog): letting it go while the model runs, then taking it again
    to match, costs a DETACH and an ATTACH (a few ms), where closing and reopening the file
    costs a new DuckDB instance (about 40 ms), whose first reads of the matched faces' rows
    are then three times slower still (at a million faces)."""
    from .store.attach import AttachedCatalog, reads_through

    catalog = AttachedCatalog(settings.catalog_path, settings.lock_timeout)
    try:
        with reads_through(catalog):
            _serve_attached(settings, conn)
    finally:
        catalog.close()


def _serve_attached(settings: Settings, conn: Connection) -> None:
    from .query import match_in, warm_up
    from .store import Store
    from .summary import change_stamp

    store: Store | None = None
    people = None
    failure: BaseException | None = None
    stamp: tuple[int, ...] | None = None
    try:
        try:
            store = Store.open(settings, read_only=True)
            _send(conn, ("ok", store.recorded_model))
        except Exception as exc:
            _send(conn, ("error", exc))
            return
        try:
            people = warm_up(store, settings)
            stamp = change_stamp(settings.catalog_path)  # still holding it: nothing committed
        except Exception as exc:  # reported when the parent asks, with the query's context
            failure = exc
        store.release()  # while the parent runs the model, a writer need not wait for us
        try:
            request = conn.recv()
        except EOFError:  # the parent found no face, or failed before matching
            return
        try:
            if failure is not None:
                raise failure
            vectors, k, photo_hash = request
            with store.snapshot():  # held from the check to the answer: nothing commits between
                if change_stamp(settings.catalog_path) == stamp:
                    reply: tuple[str, Any] = ("ok", match_in(store, settings, vectors, k,
                                                             photo_hash=photo_hash, people=people))
                else:
                    reply = ("ok", None)
            if reply[1] is None:  # a writer committed while the model ran: match afresh
                store.close(save=False)
                store = Store.open(settings, read_only=True)
                reply = ("ok", match_in(store, settings, vectors, k, photo_hash=photo_hash))
        except Exception as exc:
            reply = ("error", exc)
        _send(conn, reply)
    finally:
        if store is not None:
            store.close(save=False)
        conn.close()


def _send(conn: Connection, reply: tuple[str, Any]) -> None:
    try:
        conn.send(reply)
    except Exception as exc:  # an exception that does not pickle: its message instead
        conn.send(("error", FaceidxError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))
