"""One read of the catalog that several use cases share: what a web page (or a command) reads,
read through one read-only Store, opened on first use and closed when the read ends.

The web app opens a `Reader` per request and hands it to every use case the page calls (the
page, the named people, the last change for the Undo bar): the catalog is attached once per
request, not once per use case, and what one page shows comes from one state of the catalog.
The use cases also take plain Settings (the CLI, scripts, tests): each then opens and closes
the catalog for itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Self

from .settings import Settings
from .store import Store


class Reader:
    """A read-only view of the catalog at settings.home for the length of a `with` block.

    The catalog is opened on the first `store()` (a page read from memory opens nothing) and
    one read transaction holds for the rest of the block, so every read inside sees one state
    of the catalog. Hold it for one request: while it is open a writer in another process (the
    watch daemon) waits, and a write in this process must not start inside it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.opened = 0  # times this Reader opened the catalog (at most once)
        self._store: Store | None = None
        self._stack = ExitStack()

    def store(self) -> Store:
        if self._store is None:
            store = Store.open(self.settings, read_only=True)
            self._stack.callback(store.close, save=False)
            self._stack.enter_context(store.snapshot())
            self._store = store
            self.opened += 1
        return self._store

    def close(self) -> None:
        self._store = None
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Source = Settings | Reader
"""What a read use case takes: a Reader shared with other use cases, or Settings (it opens the
catalog for itself)."""


def settings_of(source: Source) -> Settings:
    return source.settings if isinstance(source, Reader) else source


@contextmanager
def reading(source: Source) -> Iterator[Store]:
    """The read-only Store of `source`: the Reader's own, or one opened for this block."""
    if isinstance(source, Reader):
        yield source.store()
        return
    with Store.open(source, read_only=True) as store:
        yield store
