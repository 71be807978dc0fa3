"""Face models behind one interface. Nothing here imports torch or dlib until a model is built."""

from __future__ import annotations

from ..errors import FaceidxError
from ..settings import Settings
from .base import FaceModel

MODEL_NAMES = ("facenet", "sface", "dlib")
AUTO = "auto"
"""Not a model: facenet when its weights can be had, else sface (see indexer.models.auto)."""

# The distance under which two photos show the same person, on L2-normalised vectors: the
# scale every distance threshold of a model is set on.
# dlib: its documented 0.6 applies to raw descriptors, whose norm is 1.42 (median over 199 LFW
# faces here), so 0.6 / 1.42 = 0.42 on unit vectors.
# facenet (VGGFace2 weights 20180402-114759): 1.04 on unit vectors, the published threshold
# for these weights (deepface's table for "Facenet512", converted from the same checkpoint).
# sface: OpenCV Zoo's published cosine-similarity threshold 0.363 for SFace, as a distance on
# unit vectors: sqrt(2 - 2 * 0.363) = 1.13.
SAME_PERSON_DISTANCE = {"dlib": 0.42, "facenet": 1.04, "sface": 1.13}


# Measured thresholds, used instead of dlib's scaled by SAME_PERSON_DISTANCE where present.
# sface, on its LFW index (../shared/faces/lfw): a partial index of 2,560 photos (949 people)
# first, with scripts/measure_cluster_distances.py and scripts/measure_assign_threshold.py
# (--thresholds 0.70,1.10,0.04), then checked on all 7,171 photos (8,251 faces): default
# recluster BCubed F1 0.987; assignment at 0.94 as below (3,810 held-out faces of 308 people).
# SFace's same-person distances are 0.78 (median; p95 0.95), different people 1.35 (median;
# p1 1.18), so dlib's defaults scaled by 1.13 / 0.42 sit about 10% too tight.
ASSIGN_THRESHOLD = {"sface": 0.94}
"""Online assignment: at 0.94, 98.9% of held-out known faces join the right person, 0.1% a
wrong one, 0.1% of strangers are assigned (at 1.06 3.7% are; at 0.82 only 94% join). dlib at
its 0.30: 95%, 0.1%, 1%."""
CLUSTER_DISTANCES = {
    "sface": {
        # hdbscan refinement: BCubed F1 0.972 (dlib's scaled) -> 0.990 at x1.10, 0.970 at x1.2
        "split_distance": 1.01, "merge_distance": 0.74, "attach_distance": 0.98,
        "cw_threshold": 0.99,  # 0.956 scaled -> 0.992 (0.958 at 1.08)
        "dbscan_eps": 0.99,  # 0.956 scaled -> 0.993 (0.841 at 1.08)
        "agglomerative_threshold": 1.07,  # 0.977 scaled -> 0.991 (0.977 at 1.11)
        "kmeans_estimate_distance": 1.0,
    },
}
"""Per-model clustering distances (fields of indexer.clustering.ClusterParams)."""


def distance_scale(model_name: str) -> float:
    """How much larger `model_name`'s distances are than dlib's (thresholds are set on dlib)."""
    return SAME_PERSON_DISTANCE.get(model_name, SAME_PERSON_DISTANCE["dlib"]) / \
        SAME_PERSON_DISTANCE["dlib"]


def create_model(name: str, settings: Settings, *, parallel: bool = False) -> FaceModel:
    """Build (but do not load) the named model; `load()` fetches weights on first use.

    With parallel=True the model is spread over `settings.workers` processes (default: one per
    core for dlib, one for facenet), for indexing many photos.
    """
    if parallel:
        from ..workers import ParallelModel, default_workers

        workers = settings.workers if settings.workers is not None else default_workers(name)
        if workers > 1:
            return ParallelModel(name, settings, workers)
    if name == "dlib":
        from .dlib_model import DlibModel

        return DlibModel(settings)
    if name == "facenet":
        from .facenet_model import FacenetModel

        return FacenetModel(settings)
    if name == "sface":
        from .sface_model import SfaceModel

        return SfaceModel(settings)
    raise FaceidxError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


__all__ = ["ASSIGN_THRESHOLD", "AUTO", "CLUSTER_DISTANCES", "MODEL_NAMES", "SAME_PERSON_DISTANCE",
           "FaceModel", "create_model", "distance_scale"]
