"""One folder per cluster (and `outliers/`): links to its photos and its thumbnail grid."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from ..errors import FaceidxError
from .data import OUTLIER, ExportData
from .grids import grid_image
from .images import SYNTHETIC, Thumbnails
from .progress import Progress

log = logging.getLogger(__name__)

OUTLIERS_FOLDER = "outliers"
GRID_FILE = "thumbnail_grid.png"


class LinkMode(StrEnum):
    symlink = "symlink"
    hardlink = "hardlink"
    copy = "copy"


@dataclass(frozen=True)
class Group:
    """The faces one folder shows: a cluster's, or the outliers'."""

    cluster_id: int
    folder: str
    title: str
    rows: np.ndarray  # rows of ExportData.faces, in grid order
    total: int
    note: str


def groups(data: ExportData, cells: int) -> list[Group]:
    """Each cluster's grid faces (its medoid, then the nearest its centroid), then outliers."""
    out = []
    face_ids = np.asarray([f.face_id for f in data.faces], dtype=np.int64)
    for c in data.clusters:
        rows = np.flatnonzero(data.labels == c.cluster_id)
        medoid = int(np.flatnonzero(face_ids == c.medoid_face_id)[0])
        rest = rows[rows != medoid]
        rest = rest[np.lexsort((face_ids[rest], data.distances[rest]))]
        shown = np.concatenate([[medoid], rest[:cells - 1]]).astype(np.int64)
        note = "red frame: the medoid (the most representative face), then the nearest the " \
               "centroid first; numbers: face ids"
        if len(rows) > cells:
            note = f"showing {cells} of {len(rows)}: the medoid (red frame), then the " \
                   f"{cells - 1} faces nearest the centroid; numbers: face ids"
        out.append(Group(c.cluster_id, c.folder, f"{c.label} · {len(rows)} faces", shown,
                         len(rows), note))
    rows = np.flatnonzero(data.labels == OUTLIER)
    if len(rows):
        note = "faces in no cluster, by face id (the numbers)"
        if len(rows) > cells:
            note = f"showing the first {cells} of {len(rows)} faces in no cluster, by face id " \
                   "(the numbers)"
        out.append(Group(OUTLIER, OUTLIERS_FOLDER, f"outliers · {len(rows)} faces",
                         rows[:cells], len(rows), note))
    return out


def link_name(image_id: int, path: str) -> str:
    """Unique within a folder: two photos called IMG_0001.jpg get different image ids."""
    return f"{image_id}_{Path(path).name}"


def place(source: Path, target: Path, mode: LinkMode) -> None:
    if mode is LinkMode.symlink:
        target.symlink_to(source)
    elif mode is LinkMode.hardlink:
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise FaceidxError(
                    f"cannot hard-link {source} into {target.parent} ({exc.strerror}); "
                    "photos and OUT must be on the same file system: use --link symlink "
                    "or --link copy") from exc
            raise
    else:
        shutil.copy2(source, target)


def write_folders(data: ExportData, out: Path, grid_groups: list[Group], thumbs: Thumbnails,
                  mode: LinkMode, *, columns: int, progress: Progress) -> dict[str, int]:
    """Create every folder with its photo links and its grid; counts of what was written."""
    counts = {"folders": 0, "links": 0, "missing_photos": 0}
    jobs = []
    for g in grid_groups:
        rows = np.flatnonzero(data.labels == g.cluster_id)
        images = sorted({(data.faces[r].image_id, data.faces[r].path) for r in rows})
        jobs.append((g, images))
    progress.start(sum(len(images) + 1 for _, images in jobs), "writing folders")
    for g, images in jobs:
        folder = out / g.folder
        folder.mkdir()
        counts["folders"] += 1
        for image_id, path in images:
            source = Path(path)
            if path.startswith(SYNTHETIC):  # a synthetic home's photos have no file to link
                counts["synthetic_photos"] = counts.get("synthetic_photos", 0) + 1
            elif not source.exists():
                log.warning("%s is gone from disk; not linked into %s", path, g.folder)
                counts["missing_photos"] += 1
            else:
                place(source, folder / link_name(image_id, path), mode)
                counts["links"] += 1
            progress.advance()
        shown = [data.faces[r].face_id for r in g.rows.tolist()]
        grid = grid_image([thumbs[f] for f in shown], [str(f) for f in shown], g.title,
                          g.note, columns=columns, thumb=thumbs.size,
                          framed_first=g.cluster_id != OUTLIER)
        grid.save(folder / GRID_FILE)
        progress.advance()
    return counts
