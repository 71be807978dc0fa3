"""The one owner of persistent state: a DuckDB catalog (the truth) and a FAISS file (a cache).

Every SQL statement and every FAISS call in faceidx lives in this package. The catalog holds every
embedding; the FAISS index is derived from it, written atomically, and rebuilt whenever it is
missing, unreadable or out of step with the catalog. `Store` is one object; its methods are
grouped by concern in the modules beside this one.
"""

from __future__ import annotations

from ..migrations import SCHEMA_VERSION
from .base import StoreBase
from .browse import BrowseMixin
from .centroids import CentroidsMixin
from .faces import FacesMixin
from .history import HistoryMixin
from .images import ImagesMixin
from .people import PeopleMixin
from .rows import (
    Change,
    ClusterRow,
    ClusterSnapshot,
    ClusterState,
    Counts,
    NewImage,
    PersonRow,
    StoredFace,
    distance_from_ip,
)
from .vectors import VectorsMixin


class Store(BrowseMixin, HistoryMixin, CentroidsMixin, PeopleMixin, FacesMixin, VectorsMixin,
            ImagesMixin, StoreBase):
    """DuckDB catalog plus FAISS cache of one index home."""


__all__ = ["SCHEMA_VERSION", "Change", "ClusterRow", "ClusterSnapshot", "ClusterState", "Counts",
           "NewImage", "PersonRow", "Store", "StoredFace", "distance_from_ip"]
