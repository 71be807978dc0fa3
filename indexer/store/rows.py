"""Typed rows the store returns that a light command reads (people, counts, the history); the
rows of faces, photos and clusters are in bulkrows.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads on first use: the light commands never need it
    import numpy as np


def distance_from_ip(ip: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product."""
    import numpy as np

    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None))


def distance_to_unit(vectors: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of `vectors` to `unit` (one vector, or one per row), as
    the norm of the difference in float64. Near 0 this is exact to about 1e-7, where
    `distance_from_ip` loses about 5e-4 to float32 rounding (two copies of a photo at their
    cluster's centroid): the catalog and an export must agree on such a face's distance."""
    import numpy as np

    diff = np.asarray(vectors, dtype=np.float64) - np.asarray(unit, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


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
