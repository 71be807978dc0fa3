"""The offline model: dlib's HOG face detector, 5-point alignment and ResNet 128-d descriptor.

The weights ship inside the face-recognition-models package; they are located on disk without
importing that package (its __init__ imports pkg_resources).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelUnavailable
from ..imageio import Photo
from ..settings import Settings
from ..types import FaceResult, ModelInfo
from .base import Image, clip_bbox, keep_face, l2_normalise, min_face_size

log = logging.getLogger(__name__)

SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
DEFAULT_MIN_SCORE = 0.0
"""HOG detector decision value floor (dlib's own default threshold)."""
DEFAULT_MIN_FACE_SIZE = 20
CHIP_SIZE = 150
CHIP_PADDING = 0.25


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "dlib model: the package face-recognition-models is not installed "
            "(uv sync installs it)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibModel:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._detector: Any = None
        self._predictor: Any = None
        self._encoder: Any = None
        self.min_score = DEFAULT_MIN_SCORE if settings.min_score is None else settings.min_score
        self.min_face_size = min_face_size(settings, DEFAULT_MIN_FACE_SIZE)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="dlib", dim=128, weights="dlib_face_recognition_resnet_model_v1")

    def load(self) -> None:
        if self._encoder is not None:
            return
        directory = models_dir()
        paths = [directory / SHAPE_PREDICTOR, directory / DESCRIPTOR]
        for path in paths:
            if not path.is_file():
                raise ModelUnavailable(f"dlib model: weights file {path} is missing; "
                                       "reinstall face-recognition-models")
        import dlib

        log.debug("loading dlib models from %s", directory)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(paths[0]))
        self._encoder = dlib.face_recognition_model_v1(str(paths[1]))

    def analyze(self, images: Sequence[Image]) -> list[list[FaceResult]]:
        self.load()
        import dlib

        out: list[list[FaceResult]] = []
        for image in images:
            photo = Photo.of(image)
            w, h = photo.size
            small, scale = photo.detection_copy(self._settings.detect_max_side)
            rects, scores, _ = self._detector.run(small, self._settings.dlib_upsample,
                                                  self.min_score)
            found: list[tuple[tuple[float, float, float, float], float, Any]] = []
            rgb = photo.full() if len(rects) else small
            for rect, score in zip(rects, scores, strict=True):
                bbox = clip_bbox((rect.left() * scale, rect.top() * scale,
                                  rect.right() * scale, rect.bottom() * scale), w, h)
                if not keep_face(bbox, float(score), min_size=self.min_face_size,
                                 min_score=self.min_score):
                    continue
                full_rect = dlib.rectangle(int(round(bbox[0])), int(round(bbox[1])),
                                           int(round(bbox[2])), int(round(bbox[3])))
                shape = self._predictor(rgb, full_rect)
                found.append((bbox, float(score), shape))
            if not found:
                out.append([])
                continue
            chips = [dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
                     for _, _, shape in found]
            vectors = l2_normalise(np.array(self._encoder.compute_face_descriptor(chips)))
            faces = []
            for (bbox, score, shape), vec in zip(found, vectors, strict=True):
                landmarks = tuple(float(v) for p in shape.parts() for v in (p.x, p.y))
                faces.append(FaceResult(bbox=bbox, landmarks=landmarks, score=score,
                                        embedding=vec))
            out.append(faces)
        return out
