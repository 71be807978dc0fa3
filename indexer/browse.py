"""Read use cases behind the web app's pages: people, a person's faces, unassigned faces grouped
by the person they may be, and a photo with its faces. Each takes a `Source`: the request's
Reader (one attachment of the catalog for the whole page, see indexer/reading.py) or Settings
(it opens the catalog for itself and closes it), so it works beside the watch daemon (which
writes between its batches)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BadInput, NotFound
from .reading import Source, reading, settings_of
from .settings import Settings
from .store.bulkrows import BrowseFace, BrowsePerson, PhotoRow
from .store.rows import Change

MAX_PAGE = 500
"""Largest page a request may ask for."""
SUGGEST_FACTOR = 1.5
"""Default suggestion distance as a multiple of the model's assignment threshold."""
TICK_FACTOR = 1.25
"""Suggested faces this close (a multiple of the assignment threshold) come ticked; the
farther ones (strangers among them, as seen on the five_celebrity sample) are left to the user.
Every suggested face is beyond the threshold itself, or the daemon would have assigned it."""


@dataclass(frozen=True)
class PeoplePage:
    people: list[BrowsePerson]
    total: int
    offset: int
    limit: int
    query: str


@dataclass(frozen=True)
class PersonPage:
    person: BrowsePerson
    faces: list[BrowseFace]
    offset: int
    limit: int


@dataclass(frozen=True)
class Suggestion:
    """Unassigned faces whose nearest person is close: "these 12 may be Alice"."""

    person: BrowsePerson
    faces: list[BrowseFace]
    distances: list[float]


@dataclass(frozen=True)
class UnassignedPage:
    suggestions: list[Suggestion]
    others: list[BrowseFace]
    total: int
    shown: int
    distance: float  # suggested up to this distance from a person's centroid
    tick: float  # suggested faces within this distance come ticked


@dataclass(frozen=True)
class PhotoPage:
    photo: PhotoRow
    faces: list[BrowseFace]


def catalog_version(settings: Settings) -> tuple[int, ...]:
    """Changes whenever the catalog does (every commit), read without opening it: a reader
    can keep what it read until this changes (indexer.store.attach.change_stamp)."""
    from .store.attach import change_stamp

    return change_stamp(settings.catalog_path)


def check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise BadInput(f"offset {offset} is negative")
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"limit {limit} is outside 1..{MAX_PAGE}")


def people_page(source: Source, query: str | None = None, offset: int = 0,
                limit: int = 100) -> PeoplePage:
    """People, named first then largest; `query` filters by name (or cluster id)."""
    check_page(offset, limit)
    query = (query or "").strip()
    with reading(source) as store:
        people, total = store.people_page(query or None, offset, limit)
    return PeoplePage(people=people, total=total, offset=offset, limit=limit, query=query)


def person_page(source: Source, cluster_id: int, offset: int = 0,
                limit: int = 120) -> PersonPage:
    """One person and a page of their faces; NotFound for an unknown id."""
    check_page(offset, limit)
    with reading(source) as store:
        person = store.person(cluster_id)
        faces = store.person_faces(cluster_id, offset, limit)
    return PersonPage(person=person, faces=faces, offset=offset, limit=limit)


def resolve_person(source: Source, ref: str) -> int:
    """A person's cluster id from its id or name (as the CLI takes them)."""
    ref = ref.strip()
    if not ref:
        raise BadInput("no person given: type a name or a cluster id")
    with reading(source) as store:
        return store.cluster_id_for(ref)


def faces(source: Source, face_ids: list[int]) -> list[BrowseFace]:
    """These faces with their photos and people; NotFound names an id the catalog lacks."""
    with reading(source) as store:
        found = store.browse_faces(face_ids)
    missing = sorted(set(face_ids) - {f.face_id for f in found})
    if missing:
        raise NotFound(f"no face {', '.join(map(str, missing[:5]))} in "
                       f"{settings_of(source).home}")
    return found


def faces_present(source: Source, face_ids: list[int]) -> list[BrowseFace]:
    """Those of these faces the catalog still holds."""
    with reading(source) as store:
        return store.browse_faces(face_ids)


def named_people(source: Source) -> list[BrowsePerson]:
    """Every named person (for "move to…" choices)."""
    with reading(source) as store:
        return store.named_people(MAX_PAGE)


def unassigned(source: Source, limit: int = 400) -> UnassignedPage:
    """The newest unassigned faces, grouped by their nearest person when within
    settings.suggest_distance of that person's centroid (never a person the user ruled out)."""
    from .assign import threshold_for
    from .store import distance_from_ip

    check_page(0, limit)
    settings = settings_of(source)
    with reading(source) as store:
        same_person = threshold_for(store.model.name, settings)
        distance = settings.suggest_distance
        if distance is None:
            distance = round(SUGGEST_FACTOR * same_person, 3)
        ids, vectors, total = store.unassigned_faces(limit)
        cluster_ids, centroids, _ = store.centroids()
        faces = {f.face_id: f for f in store.browse_faces(ids.tolist())}
        rejected = store.rejections_of(ids.tolist())
        nearest: dict[int, list[tuple[float, int]]] = {}
        others: list[BrowseFace] = []
        if len(cluster_ids):
            norms = np.linalg.norm(centroids, axis=1, keepdims=True)
            unit = centroids / np.where(norms > 0, norms, 1.0)
            dist = distance_from_ip(vectors @ unit.T)
            order = np.argsort(dist, axis=1)[:, :8]
        for row, face_id in enumerate(ids.tolist()):
            best = None
            if len(cluster_ids):
                for col in order[row]:
                    cid = int(cluster_ids[col])
                    if (face_id, cid) not in rejected:
                        best = (float(dist[row, col]), cid)
                        break
            if best is not None and best[0] <= distance:
                nearest.setdefault(best[1], []).append((best[0], face_id))
            elif face_id in faces:
                others.append(faces[face_id])
        people = {cid: store.person(cid) for cid in nearest}
    suggestions = []
    for cid, members in sorted(nearest.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        members.sort()
        suggestions.append(Suggestion(person=people[cid],
                                      faces=[faces[f] for _, f in members if f in faces],
                                      distances=[d for d, f in members if f in faces]))
    return UnassignedPage(suggestions=suggestions, others=others, total=total,
                          shown=len(ids), distance=distance,
                          tick=round(min(distance, TICK_FACTOR * same_person), 3))


def recent_changes(source: Source, limit: int = 20) -> list[Change]:
    """The newest corrections, read without taking the catalog for writing."""
    with reading(source) as store:
        return store.recent_changes(limit)


def history_stamp(source: Source) -> tuple[int, int] | None:
    """Changes whenever the history does (the catalog file and its newest change's id, read
    when the catalog was opened: no query), None when the catalog does not record it: what
    `last_undoable` gives can be kept until this changes, across writes of other things."""
    with reading(source) as store:
        head = store.history_head
    if head is None:
        return None
    return settings_of(source).catalog_path.stat().st_ino, head


def last_undoable(source: Source) -> Change | None:
    """The correction an Undo would take back now, if any."""
    return next((c for c in recent_changes(source) if not c.undone and c.kind != "undo"),
                None)


def photo_page(source: Source, image_id: int) -> PhotoPage:
    with reading(source) as store:
        photo, faces = store.photo(image_id)
    if photo.status != "ok":
        raise NotFound(f"photo {image_id} ({photo.path}) could not be indexed: {photo.error}")
    return PhotoPage(photo=photo, faces=faces)
