"""Typed rows of the store's bulk paths: faces, photos and clusters as indexing, reclustering,
browsing and export read or write them.

Apart from rows.py so that a light command does not build these classes: a frozen dataclass
costs a millisecond or two to create, and `faceidx name` at a million faces has 0.4 s in all
(issue 11). The store's modules import them where a method builds one, and the package
(`indexer.store.StoredFace`) on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..types import BBox, Matrix

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np


@dataclass(frozen=True)
class StoredFace:
    face_id: int
    image_id: int
    path: str
    bbox: BBox
    landmarks: tuple[float, ...]
    score: float
    cluster_id: int | None
    assign_distance: float | None
    assign_reason: str | None


@dataclass(frozen=True)
class NewImage:
    """An image row to insert (its path not yet in the catalog)."""

    path: str
    size: int
    mtime: float
    content_hash: str | None
    status: str  # "ok" or "failed"
    error: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ClusterSnapshot:
    """What a recluster reads: every face's vector and previous id, and the user's corrections."""

    face_ids: np.ndarray
    vectors: Matrix
    previous: np.ndarray  # cluster id per face, -1 for none
    named: set[int]
    pins: dict[int, int]  # face_id -> cluster_id
    rejected: set[tuple[int, int]]  # (face_id, cluster_id)
    next_cluster_id: int
    image_ids: np.ndarray  # photo per face: faces of one photo never share a cluster
    generation: str | None = None  # meta clusters_generation: corrections change it


@dataclass(frozen=True)
class ClusterState:
    """What a recluster re-reads inside its write transaction: every face now in the catalog
    (sorted) with its cluster id (-1 for none), and the corrections as they are now."""

    face_ids: np.ndarray
    cluster_ids: np.ndarray
    named: set[int]
    pins: dict[int, int]
    rejected: set[tuple[int, int]]
    next_cluster_id: int
    generation: str | None


@dataclass(frozen=True)
class ClusterRow:
    cluster_id: int
    size: int
    centroid: np.ndarray
    medoid_face_id: int


@dataclass(frozen=True)
class BrowsePerson:
    """A person (cluster) as a page shows it: name, size and representative face."""

    cluster_id: int
    name: str | None
    size: int
    medoid_face_id: int | None
    medoid_bbox: tuple[float, float, float, float] | None
    medoid_hash: str | None = None
    """Content hash of the medoid's photo (part of its crop's cache key)."""


@dataclass(frozen=True)
class BrowseFace:
    """A face with its photo and its person, as pages and crops need it."""

    face_id: int
    image_id: int
    path: str
    bbox: BBox
    cluster_id: int | None
    person: str | None
    assign_distance: float | None
    assign_reason: str | None
    content_hash: str | None


@dataclass(frozen=True)
class PhotoRow:
    image_id: int
    path: str
    status: str
    error: str | None
    width: int | None
    height: int | None
    content_hash: str | None
