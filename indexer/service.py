"""Use cases the CLI calls: open an index for a model, index folders, query a photo, status."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IndexNotFound, ModelMismatch, UnreadableImage
from .reading import Source, reading, settings_of
from .settings import Settings
from .store import Store
from .types import BBox, Match, ModelInfo

if TYPE_CHECKING:  # light commands (status, people) never import models or image decoding
    from .models import FaceModel

log = logging.getLogger(__name__)


def stored_model(settings: Settings) -> ModelInfo | None:
    """The model recorded in the index at settings.home, or None when there is no index."""
    if not settings.catalog_path.exists():
        return None
    store = Store.open(settings, read_only=True)
    try:
        return store.recorded_model
    finally:
        store.close(save=False)


def model_for_index(settings: Settings, requested: str | None) -> FaceModel:
    """The model to use on this home, loaded (weights checked) before the index is touched."""
    from .models import AUTO, create_model

    existing = stored_model(settings)
    if existing is not None:
        if requested is not None and requested not in (existing.name, AUTO):
            raise ModelMismatch(
                f"the index at {settings.home} was made by model {existing.name}, not "
                f"{requested}; use --model {existing.name}, or another --home for a new index")
        name = existing.name
    else:
        name = requested or settings.default_model
        if name == AUTO:
            from .models.auto import choose_model

            name, why = choose_model(settings)
            log.warning("new index at %s: model %s (auto: %s; --model forces one)",
                        settings.home, name, why)
    model = create_model(name, settings, parallel=True)
    model.load()
    return model


def open_for_writing(settings: Settings, model: FaceModel) -> Store:
    return Store.open(settings, model.info)


def open_for_reading(settings: Settings) -> Store:
    return Store.open(settings, read_only=True)


@dataclass(frozen=True)
class Verdict:
    """Who a query face most likely is: the nearest person's centre, and whether it is within
    the model's same-person (assignment) threshold."""

    cluster_id: int
    name: str | None
    distance: float  # from the face to that person's centroid
    threshold: float  # same person below this (indexer.assign.threshold_for)

    @property
    def same_person(self) -> bool:
        return self.distance <= self.threshold

    def line(self) -> str:
        who = self.name or f"cluster {self.cluster_id}"
        if self.same_person:
            return (f"most likely: {who}, distance {self.distance:.2f}, "
                    f"same person below {self.threshold:.2f}")
        return (f"nobody known: the nearest is {who} at distance {self.distance:.2f}, "
                f"same person below {self.threshold:.2f}")


@dataclass(frozen=True)
class QueryFace:
    bbox: BBox
    matches: list[Match]
    verdict: Verdict | None = None

    def to_json(self) -> dict[str, Any]:
        verdict = None if self.verdict is None else {
            **asdict(self.verdict), "distance": round(self.verdict.distance, 4),
            "same_person": self.verdict.same_person}
        return {"bbox": [round(v, 1) for v in self.bbox],
                "matches": [{**asdict(m), "bbox": [round(v, 1) for v in m.bbox],
                             "distance": round(m.distance, 4)} for m in self.matches],
                "verdict": verdict}


def query_image(settings: Settings, image: Path, k: int) -> list[QueryFace]:
    """Every face in `image` with its k most similar indexed faces."""
    if not settings.catalog_path.exists():
        raise IndexNotFound(f"no index at {settings.home}; run `faceidx index PATH` first")
    from .imageio import decode_raw, read_raw

    try:
        raw = read_raw(image, max_bytes=settings.max_file_bytes)
    except FileNotFoundError as exc:
        raise UnreadableImage(image, "no such file") from exc
    rgb = decode_raw(raw, max_pixels=settings.max_image_pixels)
    return query_rgb(settings, rgb, k, photo_hash=raw.content_hash)


def query_bytes(source: Source, data: bytes, k: int, *, name: str = "upload",
                model: FaceModel | None = None) -> list[QueryFace]:
    """query_image for a photo's bytes (the web app's upload); `model` may be one kept loaded.
    The catalog is read only after the model has found the faces."""
    import hashlib

    from .imageio import RawFile, decode_raw

    settings = settings_of(source)
    if not settings.catalog_path.exists():
        raise IndexNotFound(f"no index at {settings.home}; run `faceidx index PATH` first")
    if not data:
        raise UnreadableImage(name, "empty file (0 bytes)")
    raw = RawFile(path=Path(name), data=data, size=len(data), mtime=0.0,
                  content_hash=hashlib.blake2b(data, digest_size=20).hexdigest())
    return query_rgb(source, decode_raw(raw, max_pixels=settings.max_image_pixels), k,
                     model=model, photo_hash=raw.content_hash)


def query_model(settings: Settings) -> FaceModel:
    """The loaded model that made the index at settings.home, to embed query photos."""
    info = stored_model(settings)
    if info is None:
        raise IndexNotFound(f"the index at {settings.home} is empty; index some photos first")
    from .models import create_model

    model = create_model(info.name, settings)
    model.load()
    if model.info != info:
        raise ModelMismatch(f"the index at {settings.home} was made by {info.name} with weights "
                            f"{info.weights}; the model now loads weights {model.info.weights}")
    return model


def query_rgb(source: Source, rgb: Any, k: int, *, model: FaceModel | None = None,
              photo_hash: str | None = None) -> list[QueryFace]:
    """Every face in an RGB array with its k most similar indexed faces. With `photo_hash`
    (the content hash of the photo's bytes), when that photo is itself indexed its own faces
    are marked `this_photo` among the matches (beside k others) and left out of the verdicts."""
    model = model or query_model(settings_of(source))
    faces = model.analyze([rgb])[0]
    if not faces:
        return []
    import numpy as np

    vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
    results, verdicts = match_vectors(source, vectors, k, photo_hash=photo_hash)
    return [QueryFace(bbox=f.bbox, matches=m, verdict=v)
            for f, m, v in zip(faces, results, verdicts, strict=True)]


def match_vectors(source: Source, vectors: Any, k: int, *, photo_hash: str | None = None
                  ) -> tuple[list[list[Match]], list[Verdict | None]]:
    """What `query` does after the model: the k most similar faces and the nearest person of
    each query vector (scripts/bench_scale.py times it as the command's own overhead). The
    faces of the indexed photo with content hash `photo_hash` come marked, beside k others,
    and count for no person's centre in the verdicts."""
    with reading(source) as store:
        own = set(store.faces_of_bytes(photo_hash)) if photo_hash else set()
        results = store.search(vectors, k + len(own))
        if own:
            results = [_mark_own(matches, own, k) for matches in results]
        return results, _verdicts(store, settings_of(source), vectors, own)


def _mark_own(matches: list[Match], own: set[int], k: int) -> list[Match]:
    """The query photo's own faces marked, and k others."""
    from dataclasses import replace

    out, others = [], 0
    for m in matches:
        if m.face_id in own:
            out.append(replace(m, this_photo=True))
        elif others < k:
            out.append(m)
            others += 1
    return out


def _verdicts(store: Store, settings: Settings, vectors: Any,
              leave_out: set[int] | None = None) -> list[Verdict | None]:
    """Each face's nearest person centre, judged by the model's assignment threshold; the
    faces in `leave_out` (the query photo's own) count for no centre."""
    import numpy as np

    from .assign import threshold_for
    from .store import distance_from_ip

    ids, centroids, _ = store.centroids()
    if leave_out and len(ids):
        keep = np.ones(len(ids), dtype=bool)
        for cid, centre in store.centroids_without(sorted(leave_out)).items():
            at = np.searchsorted(ids, cid)
            if at < len(ids) and ids[at] == cid:
                if centre is None:
                    keep[at] = False  # nobody else in that person: no centre to judge by
                else:
                    centroids[at] = centre
        ids, centroids = ids[keep], centroids[keep]
    if len(ids) == 0:
        return [None] * len(vectors)
    # cosine to each centre without a normalised copy of ~100k centres (two 50 MB temporaries)
    norms = np.sqrt(np.einsum("ij,ij->i", centroids, centroids))
    dist = distance_from_ip((vectors @ centroids.T) / np.maximum(norms, 1e-12))
    names = store.cluster_names()
    threshold = threshold_for(store.model.name, settings)
    out: list[Verdict | None] = []
    for row in dist:
        i = int(np.argmin(row))
        cid = int(ids[i])
        out.append(Verdict(cluster_id=cid, name=names.get(cid), distance=float(row[i]),
                           threshold=threshold))
    return out


def status(source: Source, *, with_failures: bool = False) -> dict[str, Any]:
    from .summary import status_fields

    with reading(source) as store:
        counts = store.counts()
        model = store.recorded_model
        schema_version = store.schema_version()
        failures = store.failures() if with_failures else None
    return status_fields(settings_of(source), asdict(counts),
                         None if model is None else asdict(model), schema_version, failures)


def open_for_corrections(settings: Settings) -> Store:
    """A writer that holds the catalog only while it writes (a daemon may be running)."""
    return Store.open(settings, keep_open=False)


def people(source: Source, limit: int | None = None) -> list[dict[str, Any]]:
    return people_top(source, limit)[0]


def people_top(source: Source, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The first `limit` people (named first, then the largest clusters) and how many exist."""
    with reading(source) as store:
        rows, total = store.people_top(limit)
    return [asdict(p) for p in rows], total
