"""One streaming pass over the photos: decode each once, cut its faces, drop it.

Thumbnails go to a memory-mapped scratch file (RAM stays flat however many faces there are);
face crops, when asked for, go straight to disk.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from ..errors import UnreadableImage
from ..imageio import decode
from ..settings import Settings
from ..store import StoredFace
from ..types import BBox
from .progress import Progress

log = logging.getLogger(__name__)
SYNTHETIC = "synthetic://"
"""Photo paths of a synthetic home (indexer.synthetic_home.SCHEME): nothing to decode."""

MISSING_GREY = 200


def thumbnail(rgb: npt.NDArray[np.uint8], bbox: BBox, size: int,
              margin: float = 0.25) -> npt.NDArray[np.uint8]:
    """A square `size` x `size` thumbnail of the face, with some context around the box."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = bbox
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(round(max(0.0, min(cx - side / 2, w - side))))
    top = int(round(max(0.0, min(cy - side / 2, h - side))))
    right = int(round(min(w, left + side)))
    bottom = int(round(min(h, top + side)))
    crop = Image.fromarray(rgb[top:max(bottom, top + 1), left:max(right, left + 1)])
    square = ImageOps.pad(crop, (size, size), method=Image.BILINEAR,
                          color=(MISSING_GREY,) * 3)
    return np.asarray(square, dtype=np.uint8)


def face_crop(rgb: npt.NDArray[np.uint8], bbox: BBox) -> Image.Image:
    """The face's box at full resolution, clipped to the photo."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in bbox)
    x1, y1 = max(0, min(x1, w - 1)), max(0, min(y1, h - 1))
    x2, y2 = max(x1 + 1, min(x2, w)), max(y1 + 1, min(y2, h))
    return Image.fromarray(rgb[y1:y2, x1:x2])


class Thumbnails:
    """Thumbnails of chosen faces, indexed by face id, backed by a scratch file."""

    def __init__(self, face_ids: Sequence[int], size: int, scratch: Path) -> None:
        self.size = size
        self.slot = {fid: i for i, fid in enumerate(sorted(set(face_ids)))}
        self.missing: set[int] = set()
        self.crops_written = 0
        shape = (max(len(self.slot), 1), size, size, 3)
        self._array = np.memmap(scratch, dtype=np.uint8, mode="w+", shape=shape)
        self._array[:] = MISSING_GREY

    def __setitem__(self, face_id: int, thumb: npt.NDArray[np.uint8]) -> None:
        self._array[self.slot[face_id]] = thumb

    def __getitem__(self, face_id: int) -> npt.NDArray[np.uint8]:
        return np.array(self._array[self.slot[face_id]])

    def close(self) -> None:
        del self._array


@contextmanager
def render(faces: Sequence[StoredFace], thumb_ids: set[int], crops_dir: Path | None,
           settings: Settings, size: int, progress: Progress) -> Iterator[Thumbnails]:
    """Decode every photo holding a wanted face once; fill thumbnails and write crops."""
    wanted = [f for f in faces if f.face_id in thumb_ids or crops_dir is not None]
    by_image: dict[int, list[StoredFace]] = {}
    for f in wanted:
        by_image.setdefault(f.image_id, []).append(f)
    if crops_dir is not None:
        crops_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="faceidx-export-") as tmp:
        thumbs = Thumbnails(sorted(thumb_ids), size, Path(tmp) / "thumbnails.u8")
        try:
            progress.start(len(by_image), "cutting faces")
            for image_id in sorted(by_image):
                group = by_image[image_id]
                if group[0].path.startswith(SYNTHETIC):  # no photo behind it: grey cells
                    thumbs.missing.update(f.face_id for f in group)
                    progress.advance()
                    continue
                try:
                    rgb = decode(Path(group[0].path), max_pixels=settings.max_image_pixels,
                                 max_bytes=settings.max_file_bytes)
                except UnreadableImage as exc:
                    log.warning("skipping %s: %s (its faces show as grey cells)",
                                group[0].path, exc.reason)
                    thumbs.missing.update(f.face_id for f in group)
                    progress.advance()
                    continue
                for f in group:
                    if f.face_id in thumb_ids:
                        thumbs[f.face_id] = thumbnail(rgb, f.bbox, size)
                    if crops_dir is not None:
                        face_crop(rgb, f.bbox).save(crops_dir / f"face_{f.face_id}.jpg",
                                                    quality=92)
                        thumbs.crops_written += 1
                del rgb
                progress.advance()
            yield thumbs
        finally:
            thumbs.close()
