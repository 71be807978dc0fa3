"""Typed rows and detections shared by the pipeline, the store and the CLI (ModelInfo from
modelinfo.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from .modelinfo import ModelInfo

if TYPE_CHECKING:  # the light commands never import numpy (cli/fastpath.py)
    import numpy as np
    import numpy.typing as npt

Vector: TypeAlias = "npt.NDArray[np.float32]"
"""One L2-normalised embedding, shape (dim,)."""
Matrix: TypeAlias = "npt.NDArray[np.float32]"
"""Embeddings stacked row-wise, shape (n, dim)."""
BBox = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels of the upright (EXIF-rotated) full-resolution image."""


@dataclass(frozen=True)
class FaceResult:
    """A face found by a model: where it is and what it looks like."""

    bbox: BBox
    landmarks: tuple[float, ...]  # x0, y0, x1, y1, ... (5 points) in full-resolution pixels
    score: float
    embedding: Vector


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    path: str
    size: int
    mtime: float
    content_hash: str | None
    status: str  # "ok" or "failed"
    error: str | None


@dataclass(frozen=True)
class Match:
    """One indexed face returned by a similarity search."""

    face_id: int
    path: str
    bbox: BBox
    distance: float
    cluster_id: int | None
    person: str | None
    assign_distance: float | None = None
    assign_reason: str | None = None
    this_photo: bool = False  # a face of the query photo itself (the same bytes are indexed)


@dataclass
class IndexSummary:
    """What one indexing run did, for the end-of-run summary line."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    copied: int = 0
    removed: int = 0
    failed: int = 0
    faces_added: int = 0
    faces_removed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


__all__ = ["BBox", "FaceResult", "ImageRecord", "IndexSummary", "Match", "Matrix", "ModelInfo",
           "Vector"]
