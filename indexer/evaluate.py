"""`faceidx eval`: cluster a folder of known identities and score every algorithm side by side.

DIR holds one sub-folder per identity. Each photo's labelled face is its largest one (other
faces in the photo, such as a partial face at an LFW border, are clustered but not scored).
Outliers count as singleton clusters in every metric. Every algorithm runs with the
cannot-link constraint (faces of one photo are different people); `cannot_link_violations`
counts the faces that share a cluster with another face of their photo (0 when it holds), and
`cannot_link_split` the faces the constraint took out of the algorithm's clusters.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .clustering import ALGORITHMS, cluster, score
from .clustering.constraints import violations
from .errors import FaceidxError
from .recluster import default_params, recluster
from .store import Store, StoredFace

log = logging.getLogger(__name__)


def labelled_faces(store: Store, root: Path, faces: list[StoredFace] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """Row positions (in face-id order) of each photo's largest face, and its identity."""
    root_s = str(root.resolve())
    best: dict[int, tuple[float, int, str]] = {}
    for row, face in enumerate(store.faces() if faces is None else faces):
        if not face.path.startswith(root_s + "/"):
            continue
        rel = Path(face.path).relative_to(root_s)
        if len(rel.parts) < 2:
            continue  # a photo directly in DIR has no identity folder
        x1, y1, x2, y2 = face.bbox
        area = (x2 - x1) * (y2 - y1)
        if face.image_id not in best or area > best[face.image_id][0]:
            best[face.image_id] = (area, row, rel.parts[0])
    chosen = sorted(best.values(), key=lambda t: t[1])
    return np.asarray([c[1] for c in chosen], dtype=np.int64), [c[2] for c in chosen]


def evaluate(store: Store, root: Path, algorithms: list[str]) -> dict[str, dict[str, Any]]:
    """Metrics per algorithm on the labelled faces under `root`; the default run is stored."""
    faces = store.faces()
    rows, identities = labelled_faces(store, root, faces)
    if len(rows) == 0:
        raise FaceidxError(f"{root}: no faces found in identity sub-folders "
                           "(DIR must hold one folder per person)")
    n_identities = len(set(identities))
    ids, vectors = store.embeddings()
    photos = np.asarray([f.image_id for f in faces], dtype=np.int64)
    assert np.array_equal(ids, [f.face_id for f in faces])
    params = default_params(store.model.name)
    results: dict[str, dict[str, Any]] = {}
    for name in algorithms:
        if name not in ALGORITHMS:
            raise FaceidxError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
        result = cluster(vectors, name, params, groups=photos)
        scores = score(identities, result.labels[rows])
        results[name] = {**{k: round(v, 4) if isinstance(v, float) else v
                            for k, v in asdict(scores).items()},
                         "n_identities": n_identities, "faces_scored": len(rows),
                         "faces_clustered": len(ids), "seconds": round(result.seconds, 3),
                         "cannot_link_violations": violations(result.labels, photos),
                         "cannot_link_split": int(result.details.get("cannot_link_split", 0)),
                         "params": result.params}
        log.info("%s: BCubed F1 %.4f, pairwise F1 %.4f", name, scores.bcubed_f1,
                 scores.pairwise_f1)
    # Leave the index clustered with the default algorithm, for export and `people`.
    recluster(store, store.settings)
    store.set_meta("last_eval", json.dumps(results))
    return results
