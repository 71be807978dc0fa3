"""The CSV files: rows by face id, fixed float formats, so the same index gives the same bytes."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from .data import OUTLIER, ExportData

CLUSTER_COLUMNS = ["image_path", "face_id", "x1", "y1", "x2", "y2", "cluster_id", "person",
                   "distance"]
PEOPLE_COLUMNS = ["cluster_id", "person", "size", "medoid_face_id", "medoid_path", "folder"]


def _coord(v: float) -> str:
    return f"{v:.2f}"


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def write_clusters(data: ExportData, out: Path) -> tuple[int, int]:
    """clusters.csv (every face) and outliers.csv (faces with cluster id -1); row counts."""
    names = {c.cluster_id: c.name or "" for c in data.clusters}
    rows = []
    for face, label, dist in zip(data.faces, data.labels.tolist(), data.distances.tolist(),
                                 strict=True):
        rows.append([face.path, face.face_id, *(_coord(v) for v in face.bbox), label,
                     names.get(label, ""), "" if math.isnan(dist) else f"{dist:.6f}"])
    every = _write(out / "clusters.csv", CLUSTER_COLUMNS, rows)
    outliers = _write(out / "outliers.csv", CLUSTER_COLUMNS,
                      (r for r in rows if r[6] == OUTLIER))
    return every, outliers


def write_faces(data: ExportData, out: Path) -> int:
    """faces.csv: every face's box, detection score and landmarks (x, y per point)."""
    points = max((len(f.landmarks) // 2 for f in data.faces), default=0)
    header = ["face_id", "image_id", "image_path", "x1", "y1", "x2", "y2", "score"]
    for i in range(1, points + 1):
        header += [f"landmark{i}_x", f"landmark{i}_y"]
    rows = []
    for f in data.faces:
        marks = [_coord(v) for v in f.landmarks]
        rows.append([f.face_id, f.image_id, f.path, *(_coord(v) for v in f.bbox),
                     f"{f.score:.6f}", *marks, *([""] * (2 * points - len(marks)))])
    return _write(out / "faces.csv", header, rows)


def write_people(data: ExportData, out: Path) -> int:
    """people.csv: each cluster's id, name, size, representative face (medoid) and folder."""
    path_of = {f.face_id: f.path for f in data.faces}
    rows = [[c.cluster_id, c.name or "", c.size, c.medoid_face_id, path_of[c.medoid_face_id],
             c.folder] for c in data.clusters]
    return _write(out / "people.csv", PEOPLE_COLUMNS, rows)
