"""The user's corrections to who is who: rename, merge, reject, move (or split), accept, and undo.

The CLI and the web app call these. Each opens the catalog as a short-lived writer (one
connection for the call, closed when it returns, so it works beside a running watch daemon),
validates its input (BadInput, NotFound, Conflict: one-line messages), and runs the change
through `Store.record_correction`, which records it in the catalog's history with the facts it
changed, so `undo` can take back the newest one, even after a recluster (see
indexer/store/history.py for how).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BadInput, Conflict
from .reading import Source, reading
from .settings import Settings
from .store import Change, Store

__all__ = ["Change", "MergePreview", "PersonSide", "accept", "history", "merge",
           "merge_preview", "move", "reject", "rename", "resolve_cluster", "undo"]


@dataclass(frozen=True)
class PersonSide:
    """One side of a merge, as the user sees it."""

    cluster_id: int
    name: str | None
    size: int
    medoid_face_id: int | None


@dataclass(frozen=True)
class MergePreview:
    """What `merge(into, other)` would do, shown before the user confirms."""

    into: PersonSide
    other: PersonSide
    name_after: str | None  # the merged person's name
    dropped_name: str | None  # other's name, lost because `into` has one
    conflicts: list[tuple[int, int, str]]  # (face of into, face of other, photo) in one photo
    summary: str  # one line: "cluster 7 (Bob, 12 faces) joins 3 (Alice, 40 faces) as Alice"

    @property
    def needs_force(self) -> bool:
        return bool(self.conflicts)


def resolve_cluster(settings: Settings, ref: int | str) -> int:
    """The cluster a user named by id or by a person's name (NotFound when neither)."""
    with _writer(settings) as store:
        return store.cluster_id_for(str(ref))


def rename(settings: Settings, cluster_ref: int | str, name: str) -> Change:
    """Name the person a cluster shows; the name (and its faces) survive every recluster."""
    name = name.strip()
    if not name:
        raise BadInput("a name cannot be empty or blank")
    with _writer(settings) as store:
        cid, old = store.cluster_and_name(str(cluster_ref))
        summary = (f"named cluster {cid} {name!r}" if old is None
                   else f"renamed {old!r} (cluster {cid}) to {name!r}")
        return store.record_correction(
            "name", summary, lambda con, before: store.name_cluster(con, cid, name, before),
            clusters=[cid], names_only=True)


def merge_preview(source: Source, into: int, other: int) -> MergePreview:
    """What merge(into, other) would do, read without taking the catalog for writing."""
    with reading(source) as store:
        return _preview(store, into, other)


def _preview(store: Store, into: int, other: int) -> MergePreview:
    a, b = store.cluster_id_for(str(into)), store.cluster_id_for(str(other))
    if a == b:
        raise BadInput(f"cannot merge cluster {a} into itself")
    sides = []
    for cid in (a, b):
        row = store.cluster_summary(cid)
        sides.append(PersonSide(cluster_id=cid, name=row.name, size=row.size,
                                medoid_face_id=row.medoid_face_id))
    keep, gone = sides
    name_after = keep.name or gone.name
    dropped = gone.name if keep.name and gone.name else None
    conflicts = store.same_photo_faces(a, b)
    summary = (f"cluster {b} ({_who(gone)}) joins {a} ({_who(keep)})"
               + (f" as {name_after!r}" if name_after else "")
               + (f"; the name {dropped!r} is dropped" if dropped else "")
               + (f"; {len(conflicts)} photo(s) have a face in each" if conflicts else ""))
    return MergePreview(into=keep, other=gone, name_after=name_after, dropped_name=dropped,
                        conflicts=conflicts, summary=summary)


def merge(settings: Settings, into: int, other: int, *, force: bool = False) -> Change:
    """Merge person `other` into `into`: they are the same person.

    A merge that would put two faces of one photo in one person raises Conflict unless `force`.
    """
    with _writer(settings) as store:
        preview = _preview(store, into, other)
        if preview.conflicts and not force:
            f1, f2, path = preview.conflicts[0]
            more = len(preview.conflicts) - 1
            raise Conflict(
                f"cluster {preview.other.cluster_id} and {preview.into.cluster_id} both have a "
                f"face in {path} (faces {f1} and {f2})"
                + (f" and {more} more photo(s)" if more else "")
                + "; one photo rarely shows a person twice: merge anyway with --force")
        a, b = preview.into.cluster_id, preview.other.cluster_id
        summary = f"merged cluster {b} ({_who(preview.other)}) into {a} ({_who(preview.into)})"
        if preview.dropped_name:
            summary += f", dropping the name {preview.dropped_name!r}"
        return store.record_correction(
            "merge", summary, lambda con, _: store.merge_clusters(con, a, b), clusters=[a, b])


def reject(settings: Settings, face_ids: Sequence[int], cluster_id: int) -> Change:
    """These faces are not this person: they leave it, and assignment keeps them out."""
    ids = _face_ids(face_ids)
    with _writer(settings) as store:
        store.require_faces(ids)
        cid = store.cluster_id_for(str(cluster_id))
        summary = f"{_faces(ids)} not {_label(store, cid)}"
        return store.record_correction(
            "reject", summary, lambda con, _: store.reject_faces(con, ids, cid),
            clusters=[cid], faces=ids)


def move(settings: Settings, face_ids: Sequence[int], target: int | None) -> Change:
    """Put faces in person `target` by hand, or in a new person when target is None (split).

    The returned Change's cluster_id is the target (the new person for a split).
    """
    ids = _face_ids(face_ids)
    with _writer(settings) as store:
        store.require_faces(ids)
        if target is None:
            return store.record_correction(
                "split", f"split {_faces(ids)} into a new person",
                lambda con, _: store.move_faces(con, ids, None), faces=ids)
        cid = store.cluster_id_for(str(target))
        return store.record_correction(
            "move", f"moved {_faces(ids)} to {_label(store, cid)}",
            lambda con, _: store.move_faces(con, ids, cid), clusters=[cid], faces=ids)


def accept(settings: Settings, face_ids: Sequence[int], cluster_id: int) -> Change:
    """Accept a suggestion: these (unassigned) faces are this person."""
    ids = _face_ids(face_ids)
    with _writer(settings) as store:
        store.require_faces(ids)
        cid = store.cluster_id_for(str(cluster_id))
        return store.record_correction(
            "accept", f"accepted {_faces(ids)} as {_label(store, cid)}",
            lambda con, _: store.move_faces(con, ids, cid, "accepted here by the user"),
            clusters=[cid], faces=ids)


def undo(settings: Settings) -> Change:
    """Take back the newest correction not yet undone (NothingToUndo when there is none).

    Returns the history row of the undo itself; its cluster_id is the person to look at.
    """
    with _writer(settings) as store:
        return store.undo_last()


def history(settings: Settings, limit: int = 50) -> list[Change]:
    """The newest `limit` changes, newest first (undos included, undone ones marked)."""
    with _writer(settings) as store:
        return store.history(limit)


def _writer(settings: Settings) -> Store:
    """The catalog for one use case: one connection, held only until the use case returns
    (well under a second), so a watch daemon beside it waits at most that long. Its one
    transaction is committed as a checkpoint (no write-ahead log to write and sync first)."""
    return Store.open(settings, keep_open=True, checkpoint_commits=True)


def _face_ids(face_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(int(f) for f in face_ids))
    if not ids:
        raise BadInput("no face ids given")
    return ids


def _faces(ids: list[int]) -> str:
    if len(ids) == 1:
        return f"face {ids[0]}"
    shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
    return f"{len(ids)} faces ({shown})"


def _who(side: PersonSide) -> str:
    return f"{side.name + ', ' if side.name else ''}{side.size} faces"


def _label(store: Store, cid: int) -> str:
    name = store.cluster_names().get(cid)
    return f"{name!r} (cluster {cid})" if name else f"cluster {cid}"
