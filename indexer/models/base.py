"""The interface every face model offers the pipeline, and helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from ..imageio import Photo
from ..settings import Settings
from ..types import BBox, FaceResult, Matrix, ModelInfo

Image: TypeAlias = Photo | npt.NDArray[np.uint8]
"""What a model analyses: a lazily decoded Photo, or upright full-resolution RGB pixels."""


class FaceModel(Protocol):
    """Finds every face in an upright RGB image and embeds it as an L2-normalised vector."""

    @property
    def info(self) -> ModelInfo:
        """Name, dimension and weights identity; must not load the weights."""
        ...

    def load(self) -> None:
        """Load weights now (idempotent); raise ModelUnavailable with a one-line reason."""
        ...

    def analyze(self, images: Sequence[Image]) -> list[list[FaceResult]]:
        """For each photo (or full-resolution upright RGB array), every face found in it."""
        ...


def l2_normalise(vectors: npt.ArrayLike) -> Matrix:
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norms, 1e-12)).astype(np.float32)


def min_face_size(settings: Settings, default: int) -> int:
    """The smallest face kept: the setting when given, else the model's own default."""
    return default if settings.min_face_size is None else settings.min_face_size


def keep_face(bbox: BBox, score: float, *, min_size: int, min_score: float) -> bool:
    x1, y1, x2, y2 = bbox
    return min(x2 - x1, y2 - y1) >= min_size and score >= min_score


def clip_bbox(bbox: BBox, width: int, height: int) -> BBox:
    x1, y1, x2, y2 = bbox
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
