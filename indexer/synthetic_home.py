"""An index home of N synthetic faces, written through the store's real write path.

For benchmarks and for trying commands at a scale no photo folder here has: identities come from
`clustering.synthetic.make_identities` on the chosen model's distance scale (isotropic), or
from `synthetic_fit.make_like` with statistics measured on real faces; a photo holds one
to three faces, and every row goes in through `Store.add_images` / `Store.add_faces_many`, the
bulk inserts indexing uses. Photo paths use the `synthetic://` scheme, which no folder path can
start with, so `index` and `watch` never take them for files of theirs (nor forget them as gone);
meta key `synthetic` records how the home was made. Clusters can be the true identities
(written as a recluster writes its result), a real recluster, or none.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import corrections
from .clustering.synthetic import make_identities
from .models import create_model, distance_scale
from .settings import Settings
from .store import NewImage, Store
from .synthetic_fit import EmbeddingStats, make_like
from .types import FaceResult, ModelInfo

log = logging.getLogger(__name__)

SCHEME = "synthetic://"
"""Path prefix of every synthetic photo; `is_synthetic(path)` tells them apart."""
WRITE_BATCH_FACES = 20_000
"""Faces committed per transaction while building."""
CLUSTER_CHOICES = ("truth", "recluster", "none")


def is_synthetic(path: str) -> bool:
    return path.startswith(SCHEME)


@dataclass(frozen=True)
class SyntheticHomeReport:
    faces: int
    images: int
    identities: int
    clusters: int
    write_seconds: float
    faces_per_second: float
    index_seconds: float
    cluster_seconds: float


def model_info(name: str, settings: Settings) -> ModelInfo:
    """The info the real model records (without loading its weights)."""
    return create_model(name, settings).info


def build(settings: Settings, n_faces: int, model_name: str, *, seed: int = 0,
          clusters: str = "truth", named: int = 10, like: EmbeddingStats | None = None,
          progress: Callable[[int, int], None] | None = None) -> SyntheticHomeReport:
    """Add `n_faces` synthetic faces to the (new or synthetic) home at settings.home: drawn
    from `like` (statistics measured on real faces, `indexer.synthetic_fit`) when given, else
    isotropic identities on the model's distance scale."""
    info = model_info(model_name, settings)
    if like is not None:
        if like.dim != info.dim:
            raise ValueError(f"the statistics are of {like.dim}-d faces; {model_name} makes "
                             f"{info.dim}-d ones")
        data = make_like(like, n_faces, seed=seed)
    else:
        scale = distance_scale(model_name)
        data = make_identities(n_faces, info.dim, seed=seed,
                               between_distance=min(0.57 * scale, 1.3),
                               within_distance=min(0.31 * scale, 1.0))
    rng = np.random.default_rng(seed + 1)
    per_photo = _faces_per_photo(n_faces, rng)
    starts = np.concatenate([[0], np.cumsum(per_photo)])
    store = Store.open(settings, info)
    try:
        t0 = time.perf_counter()
        face_ids = _write(store, data.embeddings, per_photo, starts, seed, rng, progress)
        write_seconds = time.perf_counter() - t0
        store.set_meta("synthetic", json.dumps({
            "faces": n_faces, "model": model_name, "seed": seed, "scheme": SCHEME,
            "generator": "isotropic" if like is None else
            f"fitted to {like.faces} real faces of {like.identities} identities"}))
        t1 = time.perf_counter()
        store.save_faiss()
        index_seconds = time.perf_counter() - t1
        t2 = time.perf_counter()
        n_clusters = _cluster(store, settings, clusters, face_ids, data.embeddings,
                              data.identities)
        largest = [p.cluster_id for p in store.people(named)] if named else []
    finally:
        store.close()
    for i, cluster_id in enumerate(largest):  # the way a user names them, with history
        corrections.rename(settings, cluster_id, f"Synthetic Person {i + 1}")
    cluster_seconds = time.perf_counter() - t2
    return SyntheticHomeReport(
        faces=n_faces, images=len(per_photo), identities=int(data.identities.max()) + 1
        if n_faces else 0, clusters=n_clusters, write_seconds=round(write_seconds, 2),
        faces_per_second=round(n_faces / max(write_seconds, 1e-9)),
        index_seconds=round(index_seconds, 2), cluster_seconds=round(cluster_seconds, 2))


def _faces_per_photo(n_faces: int, rng: np.random.Generator) -> np.ndarray:
    """One to three faces per photo (70% / 20% / 10%), summing to n_faces."""
    counts = rng.choice([1, 2, 3], size=n_faces, p=[0.7, 0.2, 0.1])
    total = np.cumsum(counts)
    cut = int(np.searchsorted(total, n_faces))
    counts = counts[: cut + 1].copy()
    counts[-1] -= int(total[cut] - n_faces)
    return counts[counts > 0]


def _write(store: Store, vectors: np.ndarray, per_photo: np.ndarray, starts: np.ndarray,
           seed: int, rng: np.random.Generator,
           progress: Callable[[int, int], None] | None) -> np.ndarray:
    n_faces = len(vectors)
    face_ids = np.empty(n_faces, dtype=np.int64)
    photo = 0
    while photo < len(per_photo):
        end = int(np.searchsorted(starts, starts[photo] + WRITE_BATCH_FACES, side="right"))
        end = max(photo + 1, min(end - 1, len(per_photo)))
        images = [NewImage(path=f"{SCHEME}seed{seed}/{p:08d}.jpg", size=100_000 + p,
                           mtime=1.6e9 + p, content_hash=f"synthetic-{seed}-{p}",
                           status="ok", width=1024, height=768) for p in range(photo, end)]
        faces = [_faces_of(vectors[starts[p]:starts[p + 1]], rng) for p in range(photo, end)]
        with store.transaction() as con:
            image_ids = store.add_images(con, images)
            ids = store.add_faces_many(con, list(zip(image_ids, faces, strict=True)))
        face_ids[starts[photo]:starts[end]] = ids
        photo = end
        if progress is not None:
            progress(int(starts[end]), n_faces)
    return face_ids


def _faces_of(vectors: np.ndarray, rng: np.random.Generator) -> list[FaceResult]:
    out = []
    for i, vec in enumerate(vectors):
        x, y, side = 80.0 + 300.0 * i + rng.uniform(0, 40), rng.uniform(80, 300), \
            float(rng.uniform(90, 220))
        eyes = (x + 0.3 * side, y + 0.35 * side, x + 0.7 * side, y + 0.35 * side)
        landmarks = (*eyes, x + 0.5 * side, y + 0.55 * side, x + 0.35 * side, y + 0.75 * side,
                     x + 0.65 * side, y + 0.75 * side)
        out.append(FaceResult(bbox=(x, y, x + side, y + side), landmarks=landmarks,
                              score=float(rng.uniform(0.8, 1.0)), embedding=vec))
    return out


def _cluster(store: Store, settings: Settings, how: str, face_ids: np.ndarray,
             vectors: np.ndarray, identities: np.ndarray) -> int:
    if how == "none":
        return 0
    if how == "recluster":
        from .recluster import recluster

        return recluster(store, settings).clusters
    return _write_truth(store, face_ids, vectors, identities)


def _write_truth(store: Store, face_ids: np.ndarray, vectors: np.ndarray,
                 identities: np.ndarray) -> int:
    """The true identities with two or more faces as clusters (singletons stay unassigned)."""
    from .recluster import _cluster_rows

    sizes = np.bincount(identities)
    final = np.where(sizes[identities] >= 2, identities + 1, -1).astype(np.int64)
    order = np.argsort(face_ids)
    face_ids, vectors, final = face_ids[order], vectors[order], final[order]
    rows, distances = _cluster_rows(face_ids, vectors, final)
    store.apply_clustering(face_ids, final, distances, "synthetic identity", rows, keep=set())
    return len(rows)
