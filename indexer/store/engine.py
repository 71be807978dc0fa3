"""The DuckDB engine the store talks to, imported as `duckdb`.

The store uses only the compiled engine (`_duckdb`: connect, connections, results, exceptions),
which the `duckdb` package re-exports. Importing the package costs about 0.15 s more (its
version through importlib.metadata, relation helpers, Arrow sources), a third of a light
command's budget at a million faces (issue 11), for nothing the store calls. A `duckdb`
imported elsewhere in the process (the daemon, the clustering) adds its helpers to the same
connection class; nothing here changes.
"""

from __future__ import annotations

try:
    import _duckdb as duckdb
except ImportError:  # a duckdb package laid out otherwise: the whole package
    import duckdb  # type: ignore[no-redef]

__all__ = ["duckdb"]
