"""Keep cluster ids stable across reclusters, honouring the user's names, pins and rejections.

Pure function: the caller reads the previous ids, names, pins and rejections from storage,
calls `reconcile`, and writes the result back.

Rules, in order:
1. A new cluster holding more than half of an old cluster's faces keeps that old id. A new
   cluster can take at most one old id; conflicts go to the larger overlap (then a named id,
   then the smaller id).
2. Every other new cluster gets a fresh id, counting up from `next_id`.
3. A named id is never deleted or renamed. When no new cluster took it, it keeps its pinned
   faces and the largest group (two or more) of its old faces that the algorithm still put
   together in one cluster.
4. Pinned faces end in the cluster they are pinned to, whatever the algorithm said.
5. A face rejected from cluster X that would end in X becomes an outlier (-1).
6. With photo groups, no id ends up with two faces of one photo: pinned faces stay (the user
   put them there), else the face nearest the cluster's medoid stays; the others become -1.
Old unnamed ids that end up with no face are reported as dissolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from indexer.clustering import constraints


class ReconcileError(ValueError):
    """Contradictory input, such as a face pinned to a cluster it is rejected from."""


@dataclass(frozen=True)
class ReconcileReport:
    kept: tuple[int, ...]  # old ids that live on (taken by a new cluster, or named fallback)
    new: tuple[int, ...]  # fresh ids handed out
    dissolved: tuple[int, ...]  # old ids with no face any more (never a named id)
    named_fallback: tuple[int, ...]  # named ids no new cluster took, kept by pins/old faces
    changed_faces: int  # faces whose id differs from their previous id
    next_id: int  # the next free id after this call


def reconcile(
    new_labels: ArrayLike,
    previous: ArrayLike,
    named: Iterable[int],
    pinned: Mapping[int, int],
    rejected: Iterable[tuple[int, int]],
    next_id: int,
    *,
    vectors: NDArray[np.floating] | None = None,
    groups: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], ReconcileReport]:
    """Final cluster id per face (-1 = outlier) and a report; see the module docstring.

    `groups` (each face's photo, with its `vectors` for the medoids) turns on rule 6."""
    new = np.asarray(new_labels, dtype=np.int64)
    prev = np.asarray(previous, dtype=np.int64)
    if new.shape != prev.shape or new.ndim != 1:
        raise ValueError("new_labels and previous must be 1-d arrays of the same length")
    n = len(new)
    named_ids = {int(c) for c in named}
    rejected_set = {(int(f), int(c)) for f, c in rejected}
    for face, cid in pinned.items():
        if not 0 <= face < n:
            raise ValueError(f"pinned face {face} out of range")
        if (int(face), int(cid)) in rejected_set:
            raise ReconcileError(f"face {face} is both pinned to and rejected from {cid}")

    # Overlaps between new clusters and old ids, largest first.
    both = (new >= 0) & (prev >= 0)
    pairs, overlap = _overlaps(new[both], prev[both])
    old_ids, old_sizes = np.unique(prev[prev >= 0], return_counts=True)
    old_size = dict(zip(old_ids.tolist(), old_sizes.tolist(), strict=True))
    candidates = [
        (int(cnt), int(c), int(o))
        for (c, o), cnt in zip(pairs.tolist(), overlap.tolist(), strict=True)
        if 2 * cnt > old_size[o]
    ]
    candidates.sort(key=lambda t: (-t[0], t[2] not in named_ids, t[2]))
    new_to_old: dict[int, int] = {}
    taken_old: set[int] = set()
    for _, c, o in candidates:
        if c not in new_to_old and o not in taken_old:
            new_to_old[c] = o
            taken_old.add(o)

    # Fresh ids for the remaining new clusters, in order of their first face.
    used = set(old_ids.tolist()) | named_ids | {int(c) for c in pinned.values()}
    fresh = max([next_id, *[u + 1 for u in used]]) if used else next_id
    fresh_ids: list[int] = []
    final = np.full(n, -1, dtype=np.int64)
    clustered = new >= 0
    new_clusters, first_face, where = np.unique(new[clustered], return_index=True,
                                                return_inverse=True)
    order = np.argsort(np.nonzero(clustered)[0][first_face], kind="stable")
    final_of = np.empty(len(new_clusters), dtype=np.int64)  # final id of each new cluster
    for pos in order.tolist():
        c = int(new_clusters[pos])
        if c in new_to_old:
            cid = new_to_old[c]
        else:
            cid = fresh
            fresh += 1
            fresh_ids.append(cid)
        final_of[pos] = cid
    final[clustered] = final_of[where.reshape(-1)]  # one pass, not one per cluster

    # Named ids that no new cluster took keep their largest surviving group.
    fallback: list[int] = []
    for o in sorted(named_ids - taken_old):
        members = np.nonzero((prev == o) & (new >= 0))[0]
        if len(members):
            parts, counts = np.unique(new[members], return_counts=True)
            best = int(np.argmax(counts))
            if counts[best] >= 2:
                final[members[new[members] == parts[best]]] = o
        fallback.append(o)

    for face, cid in pinned.items():
        final[int(face)] = int(cid)
    for face, cid in rejected_set:
        if 0 <= face < n and final[face] == cid:
            final[face] = -1
    if groups is not None:
        if vectors is None:
            raise ValueError("cannot-link groups need the vectors to find medoids")
        photos = constraints.as_groups(groups, n)
        assert photos is not None
        final, _ = constraints.enforce(np.asarray(vectors, dtype=np.float32), final, photos,
                                       fixed=_kept_by_hand(final, prev, photos, pinned))

    present = set(np.unique(final[final >= 0]).tolist())
    kept = sorted((taken_old | set(fallback)) & (present | named_ids))
    dissolved = sorted(o for o in old_ids.tolist() if o not in present and o not in named_ids)
    report = ReconcileReport(
        kept=tuple(kept),
        new=tuple(c for c in fresh_ids if c in present),
        dissolved=tuple(dissolved),
        named_fallback=tuple(fallback),
        changed_faces=int((final != prev).sum()),
        next_id=fresh,
    )
    return final, report


def _overlaps(new: NDArray[np.int64], prev: NDArray[np.int64]
              ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Distinct (new, old) id pairs, sorted, and how many faces each holds: one sort of an
    int64 key instead of np.unique over rows (several times slower at 1M faces)."""
    if len(new) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    base, width = int(prev.min()), int(prev.max() - prev.min()) + 1
    keys, counts = np.unique((new - int(new.min())) * width + (prev - base), return_counts=True)
    pairs = np.stack([keys // width + int(new.min()), keys % width + base], axis=1)
    return pairs, counts


def _kept_by_hand(final: NDArray[np.int64], prev: NDArray[np.int64], photos: NDArray[np.int64],
                  pinned: Mapping[int, int]) -> NDArray[np.int64]:
    """Faces the user put together: pinned faces, and the faces of a pinned face's photo that
    were already in its cluster (a `move` beside another face of its photo keeps both)."""
    rows = np.asarray(sorted(int(f) for f in pinned), dtype=np.int64)
    if len(rows) == 0:
        return rows
    keys = final * (int(photos.max()) + 1) + photos
    stayed = np.nonzero((final >= 0) & (final == prev))[0]
    beside = stayed[np.isin(keys[stayed], keys[rows])]
    return np.union1d(rows, beside)
