"""One folder per cluster (and `outliers/`): links to its photos and its thumbnail grid.

A grid shows at most `cells` faces: the medoid first, then a spread of the others from the
nearest its centroid to the farthest (evenly spaced by rank), so a grid shows both what the
cluster is and where it frays. The outliers' grid shows the first faces by face id.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from ..errors import FaceidxError
from ..settings import Settings
from ..store import StoredFace
from ..store.bulkrows import BrowseFace
from .data import OUTLIER, ExportData
from .grids import grid_image, write_png
from .images import SYNTHETIC, CellCounts, CropCells, FaceSources
from .progress import Progress

log = logging.getLogger(__name__)

OUTLIERS_FOLDER = "outliers"
GRID_FILE = "thumbnail_grid.png"
PNG_COMPRESS_LEVEL = 1
"""zlib level of the grid PNGs: photos barely compress, and level 1 encodes several times
faster than the default (a 1M-face index writes about 100,000 grids)."""


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
    rows: np.ndarray  # rows of ExportData, in grid order
    total: int
    note: str


def spread(n: int, k: int) -> np.ndarray:
    """k of the positions 0..n-1, evenly spaced from the first to the last (all when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def groups(data: ExportData, cells: int) -> list[Group]:
    """Each cluster's grid faces (its medoid, then a spread by distance to the centroid), then
    the outliers'."""
    out = []
    order = np.lexsort((data.face_ids, data.distances, data.labels))
    sorted_labels = data.labels[order]
    for c in data.clusters:
        lo, hi = np.searchsorted(sorted_labels, [c.cluster_id, c.cluster_id + 1])
        members = order[lo:hi]  # nearest the centroid first
        medoid = int(data.rows_of(np.asarray([c.medoid_face_id]))[0])
        rest = members[members != medoid]
        rest = rest[spread(len(rest), cells - 1)]
        shown = np.concatenate([[medoid], rest]).astype(np.int64)
        note = "red frame: the medoid (the most representative face), then the nearest the " \
               "centroid first; numbers: face ids"
        if c.size > cells:
            note = f"showing {cells} of {c.size}: the medoid (red frame), then {cells - 1} " \
                   "spread from the nearest the centroid to the farthest; numbers: face ids"
        out.append(Group(c.cluster_id, c.folder, f"{c.label} · {c.size} faces", shown,
                         c.size, note))
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


class PhotoLinks:
    """Links each folder's photos as the face rows stream past: a photo goes into the folder
    of every cluster it has a face in (once, however many of its faces are there)."""

    def __init__(self, data: ExportData, out: Path, grid_groups: Sequence[Group],
                 mode: LinkMode) -> None:
        self.out = out
        self.mode = mode
        self.folder = {g.cluster_id: g.folder for g in grid_groups}
        self.counts = {"links": 0, "missing_photos": 0, "synthetic_photos": 0}
        # the first row of each (cluster, photo) pair links it
        order = np.lexsort((data.image_ids, data.labels))
        pair = np.stack([data.labels[order], data.image_ids[order]], axis=1)
        first = np.ones(len(order), dtype=bool)
        first[1:] = (pair[1:] != pair[:-1]).any(axis=1)
        self.linking = np.zeros(len(order), dtype=bool)
        self.linking[order[first]] = True

    def make_folders(self) -> int:
        for folder in self.folder.values():
            (self.out / folder).mkdir()
        return len(self.folder)

    def add(self, faces: Sequence[StoredFace], rows: np.ndarray, labels: np.ndarray) -> None:
        for i in np.flatnonzero(self.linking[rows]).tolist():
            face, folder = faces[i], self.folder[int(labels[rows[i]])]
            source = Path(face.path)
            if face.path.startswith(SYNTHETIC):  # a synthetic home's photos have no file
                self.counts["synthetic_photos"] += 1
            elif not source.exists():
                log.warning("%s is gone from disk; not linked into %s", face.path, folder)
                self.counts["missing_photos"] += 1
            else:
                place(source, self.out / folder / link_name(face.image_id, face.path),
                      self.mode)
                self.counts["links"] += 1


GRID_CHUNK = 400
"""Grids one worker process draws per task."""


def _draw(settings: Settings, out: Path, size: int, columns: int,
          jobs: Sequence[tuple[str, str, str, bool, list[BrowseFace]]]) -> CellCounts:
    """Draw and save the grids of `jobs` (folder, title, note, medoid framed, faces)."""
    cells = CropCells(settings, size)
    for folder, title, note, framed, faces in jobs:
        grid = grid_image(cells.cells(faces), [str(f.face_id) for f in faces], title, note,
                          columns=columns, thumb=size, framed_first=framed)
        write_png(grid, out / folder / GRID_FILE, PNG_COMPRESS_LEVEL)
    return cells.counts


def write_grids(data: ExportData, out: Path, grid_groups: Sequence[Group],
                sources: FaceSources, settings: Settings, *, size: int, columns: int,
                workers: int, progress: Progress,
                stop: threading.Event | None = None) -> CellCounts:
    """Each folder's thumbnail_grid.png, its cells from the face-crop cache; drawn by
    `workers` processes (PNG encoding and cropping are most of an export of a big index).
    Once `stop` is set, no further chunk is handed out."""
    def chunks() -> Iterator[list[tuple[str, str, str, bool, list[BrowseFace]]]]:
        for i in range(0, len(grid_groups), GRID_CHUNK):
            yield [(g.folder, g.title, g.note, g.cluster_id != OUTLIER,
                    [sources.face(f) for f in data.face_ids[g.rows].tolist()])
                   for g in grid_groups[i:i + GRID_CHUNK]]

    progress.start(len(grid_groups), "drawing grids")
    total = CellCounts()
    if workers <= 1 or len(grid_groups) <= GRID_CHUNK:
        for chunk in chunks():
            total.add(_draw(settings, out, size, columns, chunk))
            progress.advance(len(chunk))
        return total
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    # spawn, not fork: the parent has run OpenMP (t-SNE) and BLAS threads
    with ProcessPoolExecutor(max_workers=workers,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: dict[Future[CellCounts], int] = {}
        for chunk in chunks():  # a few chunks in flight: their faces are built as needed
            if stop is not None and stop.is_set():
                break
            if len(pending) >= 2 * workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    total.add(future.result())
                    progress.advance(pending.pop(future))
            pending[pool.submit(_draw, settings, out, size, columns, chunk)] = len(chunk)
        for future in pending:
            total.add(future.result())
            progress.advance(pending[future])
    return total


class BackgroundGrids:
    """`write_grids` run by a thread of this process (its worker processes draw) while the
    caller goes on: the plots, mostly on one core, and the grid workers then share the cores
    instead of taking turns. Progress is counted here and shown when the caller joins."""

    def __init__(self, data: ExportData, out: Path, grid_groups: Sequence[Group],
                 sources: FaceSources, settings: Settings, *, size: int, columns: int,
                 workers: int) -> None:
        self._total = len(grid_groups)
        self._done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._result: CellCounts | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._result = write_grids(data, out, grid_groups, sources, settings,
                                           size=size, columns=columns, workers=workers,
                                           progress=self, stop=self._stop)
            except BaseException as exc:  # handed to the caller by join()
                self._error = exc

        self._thread = threading.Thread(target=run, name="export-grids", daemon=True)
        self._thread.start()

    def start(self, total: int, description: str) -> None:
        pass  # the total is known up front

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n

    def join(self, progress: Progress) -> CellCounts:
        """Wait for every grid, showing their progress; re-raises the drawing's error."""
        progress.start(self._total, "drawing grids")
        shown = 0
        while True:
            self._thread.join(0.5)
            with self._lock:
                done = self._done
            if done > shown:
                progress.advance(done - shown)
                shown = done
            if not self._thread.is_alive():
                break
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Hand out no more grids and wait for those in hand (the caller failed)."""
        self._stop.set()
        self._thread.join()
