"""The store's foundation: opening the catalog, connections, transactions and meta.

DuckDB lets one process write a file at a time. A Store opens its connection lazily and
`release()` closes it, so a long-running writer (the watch daemon) holds the file only while it
works; other processes wait up to `settings.lock_timeout` for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..errors import IndexBusy, IndexNotFound, ModelMismatch
from ..migrations import apply_migrations
from ..modelinfo import ModelInfo
from ..settings import Settings
from ..summary import Upkeep
from .attach import current as current_attached
from .engine import duckdb

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np

log = logging.getLogger(__name__)


class StoreBase:
    """Connection, transactions, meta and the recorded model of one index home."""

    def __init__(self, settings: Settings, *, read_only: bool = False,
                 keep_open: bool = True, checkpoint_commits: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        self.keep_open = keep_open
        self.checkpoint_commits = checkpoint_commits and not read_only
        self._con: duckdb.DuckDBPyConnection | None = None
        self._faiss: Any = None
        self._faiss_dirty = False
        self._pending_add: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_remove: list[int] = []
        self._delta_valid_bytes: int | None = None  # the FAISS delta log (vectors.py)
        self._delta_faces = 0
        self._model: ModelInfo | None = None
        self._schema_at_open = 0  # the catalog's schema version when this Store opened it
        # the newest history change's id when it opened (history.py; None: not recorded yet)
        self.history_head: int | None = None
        # a long-running reader (the web app) reads through a kept instance (attach.py)
        self._attached = current_attached(settings.catalog_path) if read_only else None
        # a writer brings summary.json up to date before it lets the catalog go
        self._upkeep = None if read_only else Upkeep(settings)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, settings: Settings, model: ModelInfo | None = None, *,
             read_only: bool = False, keep_open: bool = True,
             checkpoint_commits: bool = False) -> Self:
        """Open the index in settings.home; create it (with `model`) when writing and absent.

        With `model` given, an index made by another model raises ModelMismatch. With
        keep_open=False the catalog file is opened for each unit of work and closed after it,
        so other processes can use it in between (the watch daemon does this).

        checkpoint_commits: each commit goes straight into the catalog file (DuckDB's
        checkpoint) instead of into its write-ahead log first. For a writer of one small
        transaction before it lets the catalog go (a correction), which checkpoints anyway
        before it does (summary.Upkeep; DuckDB's own close would otherwise): the log's write
        and its two fsyncs are saved, and a crash at any point leaves the last checkpoint or
        this one (the file's header is written last). DuckDB writes the log as usual when
        another transaction of this process is open.
        """
        if not settings.catalog_path.exists():
            if read_only or model is None:
                raise IndexNotFound(
                    f"no index at {settings.home}; run `faceidx index PATH` first "
                    "(or point --home / FACEIDX_HOME at an existing index)"
                )
            settings.home.mkdir(parents=True, exist_ok=True)
        existed = settings.catalog_path.exists()
        store = cls(settings, read_only=read_only, keep_open=keep_open,
                    checkpoint_commits=checkpoint_commits)
        try:
            if read_only or not (existed and store._needs_nothing(model)):
                if not read_only:
                    with store.transaction() as con:
                        apply_migrations(con)
                        store._check_or_record_model(con, model)
                store._model = store._read_model()
            if model is not None and store._model is not None:
                _ensure_same_model(settings.home, store._model, model)
        except BaseException:
            store.close(save=False)
            raise
        return store

    def _needs_nothing(self, model: ModelInfo | None) -> bool:
        """Whether a writer opening an existing catalog finds it migrated and its model
        recorded (when it brings one): then opening writes nothing (a write transaction at
        every open cost `faceidx name` a commit, and its checkpoint, at a million faces)."""
        from ..migrations import SCHEMA_VERSION

        try:
            self._model = self._read_model()
        except duckdb.CatalogException:  # no meta table yet
            return False
        return self._schema_at_open == SCHEMA_VERSION and (model is None or
                                                           self._model is not None)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the catalog, waiting (up to settings.lock_timeout) while another process
        writes it. Within one process (`watch --serve`, the web app's threads) DuckDB refuses
        a read-only and a read-write connection side by side: a reader then shares the
        writer's configuration (it still only reads), and a writer waits for the readers."""
        if self._con is not None:
            return self._con
        if self._attached is not None:
            self._con = self._attached.acquire()
            if self._con is not None:
                return self._con
            self._attached = None  # this process writes the file now: read as below
        path = str(self.settings.catalog_path)
        deadline = time.monotonic() + self.settings.lock_timeout
        delay = 0.02
        while True:
            try:
                self._con = duckdb.connect(path, read_only=self.read_only)
                return self._con
            except duckdb.ConnectionException as exc:
                if "different configuration" not in str(exc):
                    raise
                if self.read_only:
                    try:
                        self._con = duckdb.connect(path)
                        return self._con
                    except duckdb.ConnectionException as again:
                        if "different configuration" not in str(again):
                            raise
                if time.monotonic() > deadline:
                    raise IndexBusy(f"{path}: this process kept the catalog open for "
                                    f"{self.settings.lock_timeout:.0f} s; try again") from exc
                time.sleep(0.01)
                continue
            except duckdb.ResourceInUseException as exc:  # the web app's reader has it attached
                if time.monotonic() > deadline:
                    raise IndexBusy(f"{path}: this process kept the catalog attached for "
                                    f"{self.settings.lock_timeout:.0f} s; try again") from exc
                time.sleep(0.005)
                continue
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    if "lock" in str(exc).lower():
                        raise IndexBusy(
                            f"{self.settings.catalog_path}: another faceidx process kept the "
                            f"catalog busy for {self.settings.lock_timeout:.0f} s; try again"
                        ) from exc
                    raise
            time.sleep(delay)
            # a reader polls often (a web page waits for the batch in hand, not much longer)
            delay = min(delay * 2, 0.05 if self.read_only else 0.5)

    def release(self) -> None:
        """Close the DuckDB connection so other processes can open the catalog (a writer
        first brings summary.json up to date with what it committed: summary.Upkeep)."""
        if self._con is not None:
            if self._upkeep is not None:
                self._upkeep.write(self, self._con)
            if self._attached is not None:
                self._attached.release(self._con)
            else:
                self._con.close()
            self._con = None

    def close(self, *, save: bool = True) -> None:
        if save and not self.read_only:
            self.save_faiss()
        self.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(save=exc[0] is None)

    @contextmanager
    def transaction(self, *, names_of: Iterable[int] | None = None
                    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """One atomic unit of work; FAISS follows only when the catalog commits (the batch is
        appended to the delta log; the base index is not loaded for it).

        `names_of`: the work changes nothing the summary shows but these clusters' names (and
        the history), so the summary is brought up to date from the one it replaces
        (summary.Upkeep) instead of read again (at a million faces most of `faceidx name`)."""
        con = self._connect()
        if self._upkeep is not None:
            self._upkeep.began()
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            # a names-only change writes no medoid: every other write left the copies in step
            if not self.read_only and names_of is None:
                self.sync_medoids(con)
            if self._upkeep is None:
                self._commit(con)
            else:
                with self._upkeep.lock:  # no commit while a summary is read (summary.py)
                    self._upkeep.committing()
                    self._commit(con)
                    self._upkeep.committed(names_of)
        except BaseException:
            con.execute("ROLLBACK")
            self._pending_add.clear()
            self._pending_remove.clear()
            self._done_with_connection()
            raise
        removed = list(self._pending_remove)
        self._apply_pending_faiss()
        self._done_with_connection()
        if removed:
            from ..crops import remove_crops

            remove_crops(self.settings.home, removed)

    def _commit(self, con: duckdb.DuckDBPyConnection) -> None:
        if not self.checkpoint_commits:
            con.execute("COMMIT")
            return
        # DuckDB checkpoints at a commit that takes the log past checkpoint_threshold, and
        # writes no log first when the commit is bigger than the second setting. Both are
        # settings of the DuckDB instance, which another connection of this process (`watch
        # --serve`) may share: set for this commit only.
        con.execute("SET checkpoint_threshold = '0b'; SET auto_checkpoint_skip_wal_threshold = 0")
        try:
            con.execute("COMMIT")
        finally:
            con.execute("RESET checkpoint_threshold; RESET auto_checkpoint_skip_wal_threshold")

    def sync_medoids(self, con: duckdb.DuckDBPyConnection) -> int:
        """Bring each cluster's copy of its medoid's box and photo hash in step with its
        medoid_face_id, inside the write transaction about to commit (whatever wrote the
        medoid: a recluster, a person found online, a correction, an undo). A face's box and
        photo never change while it exists (new bytes at a path get new faces), so a copy
        is only made again when the medoid changes, or is cleared when its face is deleted
        (_delete_faces). Returns how many clusters it updated; one scan of the clusters when
        none changed."""
        rows = con.execute("SELECT cluster_id, medoid_face_id FROM clusters "
                           "WHERE medoid_of IS DISTINCT FROM medoid_face_id").fetchall()
        if not rows:
            return 0
        wanted = [int(m) for _, m in rows if m is not None]
        found: dict[int, tuple[Any, ...]] = {}
        if wanted:
            found = {int(r[0]): tuple(r[1:]) for r in con.execute(
                "SELECT f.face_id, f.x1, f.y1, f.x2, f.y2, i.content_hash FROM faces f "
                "JOIN images i ON i.image_id = f.image_id "
                "WHERE f.face_id IN (SELECT unnest(?))", [wanted]).fetchall()}
        empty: tuple[Any, ...] = (None,) * 5
        values = [found.get(int(m), empty) if m is not None else empty for _, m in rows]
        con.execute(
            "UPDATE clusters SET medoid_of = m.o, medoid_x1 = m.x1, medoid_y1 = m.y1, "
            "medoid_x2 = m.x2, medoid_y2 = m.y2, medoid_hash = m.h FROM (SELECT "
            "unnest(?::BIGINT[]) AS c, unnest(?::BIGINT[]) AS o, unnest(?::REAL[]) AS x1, "
            "unnest(?::REAL[]) AS y1, unnest(?::REAL[]) AS x2, unnest(?::REAL[]) AS y2, "
            "unnest(?::VARCHAR[]) AS h) m WHERE clusters.cluster_id = m.c",
            [[int(c) for c, _ in rows], [None if m is None else int(m) for _, m in rows],
             *([v[j] for v in values] for j in range(5))])
        return len(rows)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state of the catalog (a read transaction), however
        many queries they take; the connection stays open until the block ends."""
        con = self._connect()
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            self._done_with_connection()

    @contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        nested = self._con is not None
        try:
            yield self._connect()
        finally:
            if not nested:
                self._done_with_connection()

    def _done_with_connection(self) -> None:
        if not self.keep_open:
            self.release()

    # ------------------------------------------------------------------ model and meta
    def _check_or_record_model(self, con: duckdb.DuckDBPyConnection,
                               model: ModelInfo | None) -> None:
        stored = _model_from_meta(con)
        if stored is None and model is not None:
            for key, value in (("model_name", model.name), ("model_dim", str(model.dim)),
                               ("model_weights", model.weights)):
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def _read_model(self) -> ModelInfo | None:
        """The recorded model, read with the schema version (in one query: a web page reads
        both right after attaching the catalog)."""
        with self._read() as con:
            rows = dict(con.execute(
                "SELECT key, value FROM meta WHERE key IN ('model_name', 'model_dim', "
                "'model_weights', 'schema_version', 'history_head')").fetchall())
        self._schema_at_open = int(rows.get("schema_version") or 0)
        head = rows.get("history_head")
        self.history_head = None if head is None else int(head)
        return _model_from_rows(rows)

    def catalog_model(self) -> ModelInfo | None:
        """The model the catalog records now (recorded_model is the one read at open)."""
        with self._read() as con:
            return _model_from_meta(con)

    @property
    def recorded_model(self) -> ModelInfo | None:
        """The model recorded in the index, or None for an index not yet given one."""
        return self._model

    @property
    def model(self) -> ModelInfo:
        if self._model is None:
            raise IndexNotFound(f"the index at {self.settings.home} has no model recorded yet")
        return self._model

    def schema_version(self) -> int:
        with self._read() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        with self._read() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def _take_ids(self, con: duckdb.DuckDBPyConnection, kind: str, n: int) -> int:
        """Reserve `n` consecutive ids of `kind` ("face" or "image"); returns the first.

        The counter lives in meta and only grows, so an id is never handed out twice, even
        after its row was deleted."""
        key = f"next_{kind}_id"
        row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        first = int(row[0]) if row else 1
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(first + n)])
        return first

    def _next_id(self, con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
        row = con.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchone()
        return int(row[0]) if row else 1

    # -- people and corrections

def _model_from_meta(con: duckdb.DuckDBPyConnection) -> ModelInfo | None:
    return _model_from_rows(dict(con.execute(
        "SELECT key, value FROM meta WHERE key IN ('model_name', 'model_dim', 'model_weights')"
    ).fetchall()))


def _model_from_rows(rows: dict[str, str]) -> ModelInfo | None:
    if "model_name" not in rows:
        return None
    return ModelInfo(name=str(rows["model_name"]), dim=int(rows["model_dim"]),
                     weights=str(rows["model_weights"]))


def _ensure_same_model(home: Path, stored: ModelInfo, wanted: ModelInfo) -> None:
    if stored != wanted:
        raise ModelMismatch(
            f"the index at {home} was made by model {stored.name} ({stored.dim}-d, weights "
            f"{stored.weights}), not {wanted.name} ({wanted.dim}-d, weights {wanted.weights}); "
            f"use --model {stored.name}, or another --home for a new index"
        )


def bump_generation(con: duckdb.DuckDBPyConnection) -> None:
    """Tell other processes (the watch daemon) that clusters changed: meta clusters_generation
    goes up by one (from 1 when absent)."""
    con.execute("INSERT OR REPLACE INTO meta SELECT 'clusters_generation', "
                "CAST(coalesce(max(CAST(value AS BIGINT)), 0) + 1 AS VARCHAR) FROM meta "
                "WHERE key = 'clusters_generation'")


@contextmanager
def as_table(con: duckdb.DuckDBPyConnection, name: str, **columns: Any) -> Iterator[str]:
    """NumPy arrays (one per column, of one length) as a table `name` for the SQL run in the
    block: DuckDB scans them where they are. A recluster's million rows given as unnest(?) of
    Python lists cost several times their size while DuckDB built its list values (its 60k
    cluster rows, with their centroids as bytes, took 3.4 GB and 12 s at 512-d). An earlier
    statement's result still pending is run to its end first: DuckDB registers nothing beside
    one."""
    con.complete()
    con.register(name, columns)
    try:
        yield name
    finally:
        con.unregister(name)
