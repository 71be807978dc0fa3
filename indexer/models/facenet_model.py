"""The default model: MTCNN detection and alignment, InceptionResnetV1 (VGGFace2), 512-d.

torch and facenet_pytorch are imported only when the model loads (15-25 s cold).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
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

DEFAULT_MIN_SCORE = 0.9
"""MTCNN face probability floor."""
DEFAULT_MIN_FACE_SIZE = 20
IMAGE_SIZE = 160
CROP_MARGIN = 0  # facenet-pytorch's MTCNN default, in pixels of the 160 px crop
VGGFACE2_FILE = "20180402-114759-vggface2.pt"
EMBED_BATCH = 32


def torch_home() -> Path:
    """Where facenet-pytorch caches its downloads (same rule as facenet_pytorch.get_torch_home)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def cached_weights_path() -> Path:
    return torch_home() / "checkpoints" / VGGFACE2_FILE


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:16]


class FacenetModel:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._mtcnn: Any = None
        self._resnet: Any = None
        self.min_score = DEFAULT_MIN_SCORE if settings.min_score is None else settings.min_score
        self.min_face_size = min_face_size(settings, DEFAULT_MIN_FACE_SIZE)

    @property
    def info(self) -> ModelInfo:
        local = self._settings.facenet_weights
        if local is not None and Path(local).is_file():
            weights = f"file-sha256:{_file_digest(Path(local))}"
        else:
            weights = "vggface2-20180402-114759"
        return ModelInfo(name="facenet", dim=512, weights=weights)

    def load(self) -> None:
        if self._resnet is not None:
            return
        local = self._settings.facenet_weights
        if local is not None and not Path(local).is_file():
            raise ModelUnavailable(
                f"facenet model: weights file {local} (FACEIDX_FACENET_WEIGHTS) does not exist; "
                "fix the path, or use --model dlib, which works offline"
            )
        log.info("loading the facenet model (torch takes a while to import)")
        import torch
        from facenet_pytorch import MTCNN, InceptionResnetV1

        resnet = InceptionResnetV1(pretrained=None, classify=False)
        path = Path(local) if local is not None else cached_weights_path()
        if local is None and not path.is_file():
            log.warning("downloading facenet VGGFace2 weights to %s (about 110 MB, once)", path)
            try:
                from facenet_pytorch.models.inception_resnet_v1 import load_weights

                load_weights(resnet, "vggface2")
            except Exception as exc:  # network errors come in many types
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                raise ModelUnavailable(
                    f"facenet model: weights not found at {path} and the download failed "
                    f"({type(exc).__name__}); put them there, set FACEIDX_FACENET_WEIGHTS to a "
                    "local copy, or use --model dlib, which works offline"
                ) from exc
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                resnet.load_state_dict(state)
            except Exception as exc:
                raise ModelUnavailable(
                    f"facenet model: cannot load weights from {path} ({exc}); expected an "
                    "InceptionResnetV1 state_dict"
                ) from exc
        resnet.eval()
        self._resnet = resnet
        self._mtcnn = MTCNN(image_size=IMAGE_SIZE, margin=CROP_MARGIN, keep_all=True,
                            min_face_size=max(1, self.min_face_size // 2),
                            device="cpu")

    def analyze(self, images: Sequence[Image]) -> list[list[FaceResult]]:
        self.load()
        import torch
        from facenet_pytorch.models.utils.detect_face import extract_face
        from PIL import Image as PILImage

        per_image: list[list[tuple[Any, float, tuple[float, ...]]]] = []
        crops: list[Any] = []
        for image in images:
            photo = Photo.of(image)
            w, h = photo.size
            small, scale = photo.detection_copy(self._settings.detect_max_side)
            boxes, probs, points = self._mtcnn.detect(PILImage.fromarray(small), landmarks=True)
            found: list[tuple[Any, float, tuple[float, ...]]] = []
            if boxes is not None:
                full = PILImage.fromarray(photo.full())
                for box, prob, pts in zip(boxes, probs, points, strict=True):
                    bbox = clip_bbox(tuple(float(v) * scale for v in box), w, h)  # type: ignore[arg-type]
                    if not keep_face(bbox, float(prob), min_size=self.min_face_size,
                                     min_score=self.min_score):
                        continue
                    landmarks = tuple(float(v) * scale for v in np.asarray(pts).ravel())
                    crops.append(extract_face(full, bbox, IMAGE_SIZE, CROP_MARGIN))
                    found.append((bbox, float(prob), landmarks))
            per_image.append(found)
        vectors = np.zeros((0, 512), dtype=np.float32)
        if crops:
            batches = []
            with torch.no_grad():
                for start in range(0, len(crops), EMBED_BATCH):
                    batch = torch.stack(crops[start:start + EMBED_BATCH])
                    batch = (batch - 127.5) / 128.0  # fixed_image_standardization
                    batches.append(self._resnet(batch).numpy())
            vectors = l2_normalise(np.concatenate(batches))
        out: list[list[FaceResult]] = []
        i = 0
        for found in per_image:
            faces = []
            for bbox, prob, landmarks in found:
                faces.append(FaceResult(bbox=bbox, landmarks=landmarks, score=prob,
                                        embedding=vectors[i]))
                i += 1
            out.append(faces)
        return out
