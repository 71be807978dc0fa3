"""Small shapes shared by the pages and the JSON API: URLs of crops and photos, JSON rows."""

from __future__ import annotations

from typing import Any

from indexer.crops import crop_key
from indexer.store.bulkrows import BrowseFace, BrowsePerson


def crop_url(face_id: int | None, content_hash: str | None,
             bbox: tuple[float, float, float, float] | None) -> str | None:
    if face_id is None or bbox is None:
        return None
    return f"/faces/{face_id}.jpg?v={crop_key(content_hash, bbox)}"


def face_url(face: BrowseFace) -> str:
    return crop_url(face.face_id, face.content_hash, face.bbox) or ""


def person_crop_url(person: BrowsePerson) -> str | None:
    return crop_url(person.medoid_face_id, person.medoid_hash, person.medoid_bbox)


def label(person: BrowsePerson) -> str:
    return person.name or "Unnamed"


def suggestion_marks(suggestion: Any, tick: float) -> tuple[set[int], dict[int, str]]:
    """The suggested faces to tick (within `tick` of the person) and each face's distance,
    as shown under it."""
    likely = {f.face_id for f, d in zip(suggestion.faces, suggestion.distances, strict=True)
              if d <= tick}
    notes = {f.face_id: f"{d:.2f}" for f, d in zip(suggestion.faces, suggestion.distances,
                                                   strict=True)}
    return likely, notes


def rounded(bbox: tuple[float, float, float, float] | None) -> list[float] | None:
    return None if bbox is None else [round(float(v), 1) for v in bbox]


def person_json(person: BrowsePerson) -> dict[str, Any]:
    return {"cluster_id": person.cluster_id, "name": person.name, "size": person.size,
            "medoid_face_id": person.medoid_face_id, "medoid_bbox": rounded(person.medoid_bbox),
            "crop_url": person_crop_url(person)}


def face_json(face: BrowseFace) -> dict[str, Any]:
    return {"face_id": face.face_id, "image_id": face.image_id, "path": face.path,
            "bbox": rounded(face.bbox), "cluster_id": face.cluster_id, "person": face.person,
            "assign_distance": None if face.assign_distance is None
            else round(float(face.assign_distance), 4),
            "assign_reason": face.assign_reason, "crop_url": face_url(face),
            "photo_url": f"/photos/{face.image_id}"}
