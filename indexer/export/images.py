"""Pictures of faces for export: grid cells from the face-crop cache the web app uses, and
(with --crops) every face's full-resolution crop.

A grid cell is the face's cached crop; a face missing from the cache is made once (its photo
decoded once for every wanted face in it) and cached. A face whose photo cannot be read (gone,
changed since indexing, unreadable, or a synthetic home's `synthetic://` path) gets a
placeholder cell and is counted; it never stops the export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ..crops import CropCache, crop_path, decode_face_photo, face_crop
from ..errors import NotFound, UnreadableImage
from ..imageio import decode
from ..settings import Settings
from ..store import StoredFace
from ..store.bulkrows import BrowseFace
from ..types import BBox
from .progress import Progress

log = logging.getLogger(__name__)
SYNTHETIC = "synthetic://"
"""Photo paths of a synthetic home (indexer.synthetic_home.SCHEME): nothing to decode."""

PLACEHOLDER_GREY = 200
Cell = npt.NDArray[np.uint8]


def placeholder_cell(size: int) -> Cell:
    """A light grey cell saying there is no picture of this face."""
    cell = Image.new("RGB", (size, size), (PLACEHOLDER_GREY,) * 3)
    draw = ImageDraw.Draw(cell)
    font = ImageFont.load_default(size=max(10, size // 8))
    draw.text((size / 2, size / 2 - size // 10), "no photo", fill=(110, 110, 110), font=font,
              anchor="mm")
    return np.asarray(cell, dtype=np.uint8)


class FaceSources:
    """Path, box and photo hash of chosen faces, captured page by page while the catalog is
    open, so that no photo is read before the catalog is released."""

    def __init__(self, face_ids: np.ndarray) -> None:
        self.face_ids = np.unique(np.asarray(face_ids, dtype=np.int64))
        n = len(self.face_ids)
        self.image_ids = np.zeros(n, dtype=np.int64)
        self.bboxes = np.zeros((n, 4), dtype=np.float64)
        self.paths: list[str] = [""] * n
        self.hashes: list[str | None] = [None] * n

    def capture(self, faces: Sequence[StoredFace], hashes: Sequence[str | None]) -> None:
        if not len(self.face_ids) or not faces:
            return
        ids = np.fromiter((f.face_id for f in faces), dtype=np.int64, count=len(faces))
        at = np.minimum(np.searchsorted(self.face_ids, ids), len(self.face_ids) - 1)
        for i in np.flatnonzero(self.face_ids[at] == ids).tolist():
            slot, face = int(at[i]), faces[i]
            self.image_ids[slot] = face.image_id
            self.bboxes[slot] = face.bbox
            self.paths[slot] = face.path
            self.hashes[slot] = None if face.path.startswith(SYNTHETIC) else hashes[i]

    def path(self, face_id: int) -> str:
        return self.paths[int(np.searchsorted(self.face_ids, face_id))]

    def face(self, face_id: int) -> BrowseFace:
        slot = int(np.searchsorted(self.face_ids, face_id))
        x1, y1, x2, y2 = self.bboxes[slot].tolist()
        return BrowseFace(face_id=int(face_id), image_id=int(self.image_ids[slot]),
                          path=self.paths[slot], bbox=(x1, y1, x2, y2), cluster_id=None,
                          person=None, assign_distance=None, assign_reason=None,
                          content_hash=self.hashes[slot])


@dataclass
class CellCounts:
    cached: int = 0
    made: int = 0
    synthetic: int = 0
    unreadable: int = 0
    unreadable_photos: set[int] = field(default_factory=set)

    def add(self, other: CellCounts) -> None:
        self.cached += other.cached
        self.made += other.made
        self.synthetic += other.synthetic
        self.unreadable += other.unreadable
        self.unreadable_photos |= other.unreadable_photos

    @property
    def placeholders(self) -> int:
        return self.synthetic + self.unreadable


class CropCells:
    """Grid cells of `size` pixels from the face-crop cache under the index home."""

    def __init__(self, settings: Settings, size: int) -> None:
        self.settings = settings
        self.size = size
        self.cache = CropCache(settings)
        self.placeholder = placeholder_cell(size)
        self.counts = CellCounts()
        self._cache_writable = True

    def _cell(self, crop: Image.Image) -> Cell:
        return np.asarray(crop.convert("RGB").resize((self.size, self.size), Image.BILINEAR),
                          dtype=np.uint8)

    def _load(self, path: Path) -> Cell | None:
        try:
            with Image.open(path) as img:
                return self._cell(img)
        except (OSError, ValueError):
            return None  # pruned meanwhile, or a broken file: made again

    def _make(self, group: list[BrowseFace]) -> dict[int, Cell]:
        """Cells of faces sharing one photo, through the cache when it can be written."""
        home = self.settings.home
        if self._cache_writable:
            try:
                self.cache.make(group)
                made = {f.face_id: self._load(crop_path(home, f)) for f in group}
                if all(c is not None for c in made.values()):
                    return {k: v for k, v in made.items() if v is not None}
            except OSError as exc:
                log.warning("cannot write the face-crop cache in %s (%s); export makes its "
                            "crops in memory", home, exc)
                self._cache_writable = False
        rgb = decode_face_photo(self.settings, group[0])
        return {f.face_id: self._cell(face_crop(rgb, f.bbox, self.settings.crop_size))
                for f in group}

    def cells(self, faces: Sequence[BrowseFace]) -> list[Cell]:
        """One cell per face, in order."""
        out: dict[int, Cell] = {}
        todo: dict[int, list[BrowseFace]] = {}
        for f in faces:
            if f.path.startswith(SYNTHETIC):
                self.counts.synthetic += 1
                continue
            path = crop_path(self.settings.home, f)
            cell = self._load(path) if path.is_file() else None
            if cell is not None:
                out[f.face_id] = cell
                self.counts.cached += 1
            else:
                todo.setdefault(f.image_id, []).append(f)
        for image_id, group in todo.items():
            try:
                out.update(self._make(group))
                self.counts.made += len(group)
            except NotFound as exc:
                log.warning("%s; its faces show as placeholder cells", exc)
                self.counts.unreadable += len(group)
                self.counts.unreadable_photos.add(image_id)
        return [out.get(f.face_id, self.placeholder) for f in faces]


def box_crop(rgb: npt.NDArray[np.uint8], bbox: BBox) -> Image.Image:
    """The face's box at full resolution, clipped to the photo."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in bbox)
    x1, y1 = max(0, min(x1, w - 1)), max(0, min(y1, h - 1))
    x2, y2 = max(x1 + 1, min(x2, w)), max(y1 + 1, min(y2, h))
    return Image.fromarray(rgb[y1:y2, x1:x2])


def write_box_crops(sources: FaceSources, crops_dir: Path, settings: Settings,
                    progress: Progress) -> tuple[int, set[int]]:
    """crops/face_<id>.jpg for every face in `sources`, decoding each photo once; how many
    were written and the image ids of photos that could not be read."""
    crops_dir.mkdir(exist_ok=True)
    order = np.lexsort((sources.face_ids, sources.image_ids))
    bounds = np.flatnonzero(np.diff(sources.image_ids[order])) + 1
    written, unreadable = 0, set()
    groups = np.split(order, bounds) if len(order) else []
    progress.start(len(groups), "cutting face crops")
    for slots in groups:
        first = int(slots[0])
        path = sources.paths[first]
        if path.startswith(SYNTHETIC):
            progress.advance()
            continue
        try:
            rgb = decode(Path(path), max_pixels=settings.max_image_pixels,
                         max_bytes=settings.max_file_bytes)
        except UnreadableImage as exc:
            log.warning("skipping %s: %s (no crops of its faces)", path, exc.reason)
            unreadable.add(int(sources.image_ids[first]))
            progress.advance()
            continue
        for slot in slots.tolist():
            x1, y1, x2, y2 = sources.bboxes[slot].tolist()
            box_crop(rgb, (x1, y1, x2, y2)).save(
                crops_dir / f"face_{int(sources.face_ids[slot])}.jpg", quality=92)
            written += 1
        del rgb
        progress.advance()
    return written, unreadable
