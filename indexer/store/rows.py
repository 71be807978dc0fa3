"""Typed rows the store returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..types import BBox, Matrix

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np


def distance_from_ip(ip: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product."""
    import numpy as np

    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None))


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
class PersonRow:
    cluster_id: int
    name: str | None
    size: int
    medoid_face_id: int | None
    medoid_bbox: list[float] | None  # x1, y1, x2, y2 of the medoid face, 1 decimal
    medoid_path: str | None


@dataclass(frozen=True)
class Counts:
    images: int
    ok: int
    failed: int
    faces: int
    clusters: int
    people: int
    unassigned: int
    no_face: int  # photos read fine in which no face was found


@dataclass(frozen=True)
class Change:
    """One row of the correction history."""

    change_id: int
    kind: str  # "name" | "merge" | "reject" | "move" | "split" | "accept" | "undo"
    summary: str  # one line a person reads: "named cluster 12 'Alice'"
    at: str  # ISO timestamp
    cluster_id: int | None  # the person it left the user looking at
    undone: bool


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
