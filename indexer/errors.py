"""Typed exceptions raised by the library; the CLI turns them into one-line messages."""

from __future__ import annotations

from pathlib import Path


class FaceidxError(Exception):
    """Base class for every error faceidx reports to a user."""

    exit_code = 2


class UnreadableImage(FaceidxError):
    """An image file that cannot be decoded; `reason` says why in a few words."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelUnavailable(FaceidxError):
    """A face model whose weights cannot be found or loaded."""


class ModelMismatch(FaceidxError):
    """An index opened with a model other than the one that made it."""


class IndexBusy(FaceidxError):
    """Another process holds the index for writing longer than we are willing to wait."""


class IndexNotFound(FaceidxError):
    """A read-only command was pointed at a home with no index."""


class NotFound(FaceidxError):
    """A cluster, face or person named on the command line does not exist."""


class BadInput(FaceidxError):
    """A request that cannot be carried out as asked: a blank name, a merge into itself, ..."""


class NothingToUndo(BadInput):
    """`faceidx undo` with no correction left to take back."""


class Conflict(FaceidxError):
    """A request that clashes with what is stored, such as a name another person has, or a
    merge that would put two faces of one photo in one person (allowed with force)."""
