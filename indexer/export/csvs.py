"""The CSV files, streamed: rows by face id, one catalog page at a time, fixed float formats,
so the same index gives the same bytes and memory does not grow with the index."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from ..store import StoredFace
from .data import OUTLIER, ClusterInfo, ExportData

CLUSTER_COLUMNS = ["image_path", "face_id", "x1", "y1", "x2", "y2", "cluster_id", "person",
                   "distance"]
PEOPLE_COLUMNS = ["cluster_id", "person", "size", "medoid_face_id", "medoid_path", "folder"]


def _coord(v: float) -> str:
    return f"{v:.2f}"


def faces_header(landmark_values: int) -> list[str]:
    header = ["face_id", "image_id", "image_path", "x1", "y1", "x2", "y2", "score"]
    for i in range(1, landmark_values // 2 + 1):
        header += [f"landmark{i}_x", f"landmark{i}_y"]
    return header


class FaceCsvs:
    """faces.csv (boxes, scores, landmarks), clusters.csv (every face's cluster and distance)
    and outliers.csv (the faces in no cluster), written together page by page."""

    def __init__(self, data: ExportData, out: Path, landmark_values: int) -> None:
        self.data = data
        self.names = {c.cluster_id: c.name or "" for c in data.clusters}
        self.points = landmark_values // 2
        self.rows = {"faces": 0, "clusters": 0, "outliers": 0}
        self._files: list[IO[str]] = []
        self._out = out
        self._faces: Any = None
        self._clusters: Any = None
        self._outliers: Any = None

    def __enter__(self) -> FaceCsvs:
        def writer(name: str, header: Sequence[str]) -> Any:
            fh = (self._out / name).open("w", newline="", encoding="utf-8")
            self._files.append(fh)
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            return w

        self._faces = writer("faces.csv", faces_header(2 * self.points))
        self._clusters = writer("clusters.csv", CLUSTER_COLUMNS)
        self._outliers = writer("outliers.csv", CLUSTER_COLUMNS)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for fh in self._files:
            fh.close()

    def write(self, faces: Sequence[StoredFace], rows: np.ndarray) -> None:
        """One page: `faces` are rows `rows` of the export data, in face-id order."""
        labels = self.data.labels[rows].tolist()
        distances = self.data.distances[rows].tolist()
        width = 2 * self.points
        for face, label, dist in zip(faces, labels, distances, strict=True):
            box = [_coord(v) for v in face.bbox]
            marks = [_coord(v) for v in face.landmarks]
            self._faces.writerow([face.face_id, face.image_id, face.path, *box,
                                  f"{face.score:.6f}", *marks, *([""] * (width - len(marks)))])
            row = [face.path, face.face_id, *box, label, self.names.get(label, ""),
                   "" if math.isnan(dist) else f"{dist:.6f}"]
            self._clusters.writerow(row)
            if label == OUTLIER:
                self._outliers.writerow(row)
                self.rows["outliers"] += 1
        self.rows["faces"] += len(faces)
        self.rows["clusters"] += len(faces)


def write_people(clusters: Sequence[ClusterInfo], medoid_paths: dict[int, str],
                 out: Path) -> int:
    """people.csv: each cluster's id, name, size, representative face (medoid) and folder."""
    with (out / "people.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PEOPLE_COLUMNS)
        for c in clusters:
            writer.writerow([c.cluster_id, c.name or "", c.size, c.medoid_face_id,
                             medoid_paths[c.medoid_face_id], c.folder])
    return len(clusters)
