"""Named, run-once schema migrations, recorded in the `migrations` table (part of the store)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

Migration = tuple[str, Callable[["duckdb.DuckDBPyConnection"], None]]


def _initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE images (
            image_id BIGINT PRIMARY KEY,
            path VARCHAR NOT NULL,          -- absolute path; unique, kept so by the store
            size BIGINT,
            mtime DOUBLE,
            content_hash VARCHAR,           -- BLAKE2b-160 of the bytes
            status VARCHAR NOT NULL,        -- 'ok' or 'failed'
            error VARCHAR,                  -- why a failed file was refused
            width INTEGER,
            height INTEGER,
            indexed_at TIMESTAMP
        )""")
    con.execute("CREATE INDEX images_path ON images (path)")
    con.execute("CREATE INDEX images_hash ON images (content_hash)")
    con.execute("""
        CREATE TABLE faces (
            face_id BIGINT PRIMARY KEY,
            image_id BIGINT NOT NULL,
            x1 REAL, y1 REAL, x2 REAL, y2 REAL,  -- upright full-resolution pixels
            landmarks REAL[],                    -- x0, y0, x1, y1, ... (5 points)
            det_score REAL,
            embedding BLOB NOT NULL,             -- float32, L2-normalised, model_dim values
            cluster_id BIGINT,                   -- NULL or -1: unassigned / outlier
            assign_distance REAL,                -- distance to the centroid when assigned
            assign_reason VARCHAR,               -- how the cluster id was decided
            created_at TIMESTAMP DEFAULT current_timestamp
        )""")
    con.execute("CREATE INDEX faces_image ON faces (image_id)")
    con.execute("""
        CREATE TABLE clusters (
            cluster_id BIGINT PRIMARY KEY,
            size INTEGER NOT NULL DEFAULT 0,
            centroid BLOB,                       -- float32 mean of members, L2-normalised
            medoid_face_id BIGINT,
            created_at TIMESTAMP DEFAULT current_timestamp,
            updated_at TIMESTAMP DEFAULT current_timestamp
        )""")
    con.execute("""
        CREATE TABLE people (
            person_id BIGINT PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            cluster_id BIGINT,
            created_at TIMESTAMP DEFAULT current_timestamp
        )""")
    con.execute("""
        CREATE TABLE face_pins (               -- the user put this face in this cluster
            face_id BIGINT PRIMARY KEY,
            cluster_id BIGINT NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )""")
    con.execute("""
        CREATE TABLE face_rejections (         -- the user said: this face is not this cluster
            face_id BIGINT NOT NULL,
            cluster_id BIGINT NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (face_id, cluster_id)
        )""")


def _id_counters(con: duckdb.DuckDBPyConnection) -> None:
    """Face and image ids come from counters in meta, never reused even after deletes (the
    web app's crop cache and the FAISS delta log rely on that), instead of a max() per row."""
    for key, table, column in (("next_face_id", "faces", "face_id"),
                               ("next_image_id", "images", "image_id")):
        con.execute(f"INSERT OR REPLACE INTO meta SELECT ?, CAST(coalesce(max({column}), 0) + 1 "
                    f"AS VARCHAR) FROM {table}", [key])


def _history(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE history (                 -- every user correction, newest last; undoable
            change_id BIGINT PRIMARY KEY,
            kind VARCHAR NOT NULL,              -- name, merge, reject, move, split, accept, undo
            summary VARCHAR NOT NULL,           -- one line a person reads
            made_at TIMESTAMP DEFAULT current_timestamp,
            cluster_id BIGINT,                  -- the person it left the user looking at
            undone BOOLEAN NOT NULL DEFAULT false,
            undoes BIGINT,                      -- for kind 'undo': the change it took back
            state VARCHAR                       -- JSON: the facts before and after (corrections.py)
        )""")


def _medoid_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Each cluster keeps its medoid's box and photo hash (what a People page shows), kept
    in step by the store at every commit (StoreBase.sync_medoids fills them in this same
    transaction): a page of people reads the clusters alone, not every face and photo."""
    con.execute("ALTER TABLE clusters ADD COLUMN medoid_of BIGINT")  # the face they describe
    for column in ("medoid_x1", "medoid_y1", "medoid_x2", "medoid_y2"):
        con.execute(f"ALTER TABLE clusters ADD COLUMN {column} REAL")
    con.execute("ALTER TABLE clusters ADD COLUMN medoid_hash VARCHAR")


MIGRATIONS: list[Migration] = [
    ("0001_initial", _initial),
    ("0002_id_counters", _id_counters),
    ("0003_history", _history),
    ("0004_medoid_columns", _medoid_columns),
]
SCHEMA_VERSION = len(MIGRATIONS)
HISTORY_SINCE = [name for name, _ in MIGRATIONS].index("0003_history") + 1
"""The schema version from which the catalog has its history table."""
MEDOIDS_SINCE = [name for name, _ in MIGRATIONS].index("0004_medoid_columns") + 1
"""The schema version from which clusters keep their medoid's box and photo hash."""


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Run every migration not yet recorded, in order, inside the caller's transaction."""
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("CREATE TABLE IF NOT EXISTS migrations "
                "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)")
    done = {str(r[0]) for r in con.execute("SELECT name FROM migrations").fetchall()}
    applied = []
    for name, migrate in MIGRATIONS:
        if name in done:
            continue
        log.info("applying migration %s", name)
        migrate(con)
        con.execute("INSERT INTO migrations (name) VALUES (?)", [name])
        applied.append(name)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    return applied
