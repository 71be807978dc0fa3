"""The `query` use case: the indexed faces most similar to each face of a photo, and who each
face most likely is.

`query_image` (the CLI) imports neither DuckDB nor the store: a child process
(indexer.match_worker) opens the catalog and the search index while this process loads the
model. `query_bytes` (the web app, with its model kept loaded) matches in process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IndexNotFound, ModelMismatch, UnreadableImage
from .settings import Settings
from .types import BBox, Match, ModelInfo

if TYPE_CHECKING:  # the parent of `faceidx query` imports no store (see above)
    from .match_worker import MatchWorker
    from .models import FaceModel
    from .reading import Source
    from .store import Store


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
    """Every face in `image` with its k most similar indexed faces. The catalog side (opening
    it and the search index, reading the centroids) runs in a child process while the model
    loads (indexer.match_worker)."""
    if not settings.catalog_path.exists():
        raise IndexNotFound(f"no index at {settings.home}; run `faceidx index PATH` first")
    from .match_worker import MatchWorker

    with MatchWorker(settings) as worker:
        from .imageio import decode_raw, read_raw

        try:
            raw = read_raw(image, max_bytes=settings.max_file_bytes)
        except FileNotFoundError as exc:
            raise UnreadableImage(image, "no such file") from exc
        rgb = decode_raw(raw, max_pixels=settings.max_image_pixels)
        return query_rgb(settings, rgb, k, photo_hash=raw.content_hash, worker=worker)


def query_bytes(source: Source, data: bytes, k: int, *, name: str = "upload",
                model: FaceModel | None = None) -> list[QueryFace]:
    """query_image for a photo's bytes (the web app's upload); `model` may be one kept loaded.
    The catalog is read only after the model has found the faces."""
    from .imageio import RawFile, decode_raw, hash_bytes

    settings = _settings_of(source)
    if not settings.catalog_path.exists():
        raise IndexNotFound(f"no index at {settings.home}; run `faceidx index PATH` first")
    if not data:
        raise UnreadableImage(name, "empty file (0 bytes)")
    raw = RawFile(path=Path(name), data=data, size=len(data), mtime=0.0,
                  content_hash=hash_bytes(data))
    return query_rgb(source, decode_raw(raw, max_pixels=settings.max_image_pixels), k,
                     model=model, photo_hash=raw.content_hash)


def query_model(settings: Settings, worker: MatchWorker | None = None) -> FaceModel:
    """The loaded model that made the index at settings.home, to embed query photos (as
    recorded in the catalog, or as `worker` read it there)."""
    if worker is not None:  # the model in a current summary.json, else as the child read it
        info = _summary_model(settings) or worker.recorded_model()
    else:
        from .service import stored_model

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
              photo_hash: str | None = None, worker: MatchWorker | None = None
              ) -> list[QueryFace]:
    """Every face in an RGB array with its k most similar indexed faces. With `photo_hash`
    (the content hash of the photo's bytes), when that photo is itself indexed its own faces
    are marked `this_photo` among the matches (beside k others) and left out of the verdicts.
    With `worker`, the matching is that child process's (opened before the model loaded)."""
    model = model or query_model(_settings_of(source), worker)
    faces = model.analyze([rgb])[0]
    if not faces:
        return []
    import numpy as np

    vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
    if worker is not None:
        results, verdicts = worker.match(vectors, k, photo_hash)
        if worker.recorded_model() != model.info:  # a summary read as a commit landed
            raise ModelMismatch(f"the index at {_settings_of(source).home} changed "
                                "model during the query; run it again")
    else:
        results, verdicts = match_vectors(source, vectors, k, photo_hash=photo_hash)
    return [QueryFace(bbox=f.bbox, matches=m, verdict=v)
            for f, m, v in zip(faces, results, verdicts, strict=True)]


def match_vectors(source: Source, vectors: Any, k: int, *, photo_hash: str | None = None
                  ) -> tuple[list[list[Match]], list[Verdict | None]]:
    """What `query` does after the model: the k most similar faces and the nearest person of
    each query vector (scripts/bench_scale.py times it as the command's own overhead). The
    faces of the indexed photo with content hash `photo_hash` come marked, beside k others,
    and count for no person's centre in the verdicts."""
    from .reading import reading

    with reading(source) as store:
        return match_in(store, _settings_of(source), vectors, k, photo_hash=photo_hash)


@dataclass(frozen=True)
class People:
    """What judging a face reads that no query face changes: the people's ids, centroids (a
    memory map) and their norms, names, and the same-person threshold."""

    ids: Any
    centroids: Any
    norms: Any
    names: dict[int | None, str]
    threshold: float


def people_of(store: Store, settings: Settings) -> People:
    from .assign import threshold_for

    ids, centroids, _, norms = store.centroids_and_norms()
    return People(ids=ids, centroids=centroids, norms=norms, names=store.cluster_names(),
                  threshold=threshold_for(store.model.name, settings))


def match_in(store: Store, settings: Settings, vectors: Any, k: int, *,
             photo_hash: str | None = None, people: People | None = None
             ) -> tuple[list[list[Match]], list[Verdict | None]]:
    """match_vectors on an open store; `people` read before from it (people_of), while
    the store's connection stayed open (no other process can write meanwhile)."""
    people = people or people_of(store, settings)
    own = set(store.faces_of_bytes(photo_hash)) if photo_hash else set()
    results = store.search(vectors, k + len(own), names=people.names)
    if own:
        results = [_mark_own(matches, own, k) for matches in results]
    return results, _verdicts(store, people, vectors, own)


def warm_up(store: Store, settings: Settings) -> People:
    """Before the query faces are known: read the people, and match one stand-in face, so
    that the search index is open (base mapped, log replayed, checked against the catalog)
    and every page, table column and module match_in reads is loaded. Returns the people for
    match_in, on the same open store."""
    import numpy as np

    people = people_of(store, settings)
    stand_in = np.zeros((1, store.model.dim), np.float32)
    stand_in[0, 0] = 1.0
    match_in(store, settings, stand_in, 10, photo_hash="-", people=people)  # no such photo
    return people


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


def _verdicts(store: Store, people: People, vectors: Any,
              leave_out: set[int] | None = None) -> list[Verdict | None]:
    """Each face's nearest person centre, judged by the model's assignment threshold; the
    faces in `leave_out` (the query photo's own) count for no centre."""
    import numpy as np

    from .store import distance_from_ip

    ids = people.ids
    if len(ids) == 0:
        return [None] * len(vectors)
    # cosine to each centre from the mapped centroids and their stored norms (no normalised
    # copy of ~100k centres)
    sims = (vectors @ people.centroids.T) / np.maximum(people.norms, 1e-12)
    if leave_out:
        for cid, centre in store.centroids_without(sorted(leave_out)).items():
            at = int(np.searchsorted(ids, cid))
            if at < len(ids) and ids[at] == cid:
                # nobody else in that person: no centre to judge by
                sims[:, at] = -np.inf if centre is None else \
                    (vectors @ centre) / max(float(np.linalg.norm(centre)), 1e-12)
    dist = distance_from_ip(sims)
    if np.isinf(dist).all():
        return [None] * len(vectors)
    out: list[Verdict | None] = []
    for row in dist:
        i = int(np.argmin(row))
        cid = int(ids[i])
        out.append(Verdict(cluster_id=cid, name=people.names.get(cid), distance=float(row[i]),
                           threshold=people.threshold))
    return out


def _settings_of(source: Source) -> Settings:
    if isinstance(source, Settings):  # `faceidx query`: its process imports no store
        return source
    from .reading import settings_of

    return settings_of(source)


def _summary_model(settings: Settings) -> ModelInfo | None:
    """The recorded model as summary.json holds it while it describes the catalog as it is
    (indexer.summary): read without DuckDB, so the model starts loading at once."""
    from .summary import load

    data = load(settings)
    model = None if data is None else data.get("model")
    try:
        return ModelInfo(**model) if isinstance(model, dict) else None
    except TypeError:
        return None
