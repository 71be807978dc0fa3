"""The one owner of persistent state: a DuckDB catalog (the truth) and a FAISS file (a cache).

Every SQL statement and every FAISS call in faceidx lives in this package. The catalog holds every
embedding; the FAISS index is derived from it, written atomically, and rebuilt whenever it is
missing, unreadable or out of step with the catalog. `Store` is one object; its methods are
grouped by concern in the modules beside this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..migrations import SCHEMA_VERSION
from .base import StoreBase
from .browse import BrowseMixin
from .centroids import CentroidsMixin
from .faces import FacesMixin
from .history import HistoryMixin
from .images import ImagesMixin
from .people import PeopleMixin
from .rows import Change, Counts, PersonRow, distance_from_ip, distance_to_unit
from .vectors import VectorsMixin

if TYPE_CHECKING:
    from .bulkrows import ClusterRow, ClusterSnapshot, ClusterState, NewImage, StoredFace


class Store(BrowseMixin, HistoryMixin, CentroidsMixin, PeopleMixin, FacesMixin, VectorsMixin,
            ImagesMixin, StoreBase):
    """DuckDB catalog plus FAISS cache of one index home."""


_BULK_ROWS = {"ClusterRow", "ClusterSnapshot", "ClusterState", "NewImage", "StoredFace"}


def __getattr__(name: str) -> Any:
    """The rows of bulkrows.py, created on first use (a light command never needs them)."""
    if name in _BULK_ROWS:
        from . import bulkrows

        return getattr(bulkrows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SCHEMA_VERSION", "Change", "ClusterRow", "ClusterSnapshot", "ClusterState", "Counts",
           "NewImage", "PersonRow", "Store", "StoredFace", "distance_from_ip",
           "distance_to_unit"]
