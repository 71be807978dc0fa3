"""Face crops: small square JPEGs cached under the index home, so a page of 100 faces does not
decode 100 photos. A crop's file name holds its face id and a key made of the photo's content
hash and the face's box, so a face id reused for another face can never get a stale crop.
Only catalog photos whose bytes still match the catalog's hash are ever read."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from .errors import NotFound, UnreadableImage
from .imageio import RawFile, decode_raw, hash_bytes
from .service import open_for_reading
from .settings import Settings
from .store.bulkrows import BrowseFace, PhotoRow

log = logging.getLogger(__name__)

CROP_DIR = "crops"
MARGIN = 0.25
"""Context kept around a face box, as a fraction of its longer side, on every side."""
JPEG_QUALITY = 85
PRUNE_EVERY = 500
"""New crops written between two checks of the cache's size bound."""


def crops_root(home: Path) -> Path:
    return home / CROP_DIR


def _bucket(home: Path, face_id: int) -> Path:
    return crops_root(home) / str(face_id // 1000)


def crop_key(content_hash: str | None, bbox: tuple[float, float, float, float]) -> str:
    """What a crop shows: its photo's bytes and its box (a reused face id changes the key)."""
    text = f"{content_hash}:{','.join(f'{v:.1f}' for v in bbox)}"
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def crop_path(home: Path, face: BrowseFace) -> Path:
    key = crop_key(face.content_hash, face.bbox)
    return _bucket(home, face.face_id) / f"{face.face_id}-{key}.jpg"


def remove_crops(home: Path, face_ids: Iterable[int]) -> int:
    """Delete the cached crops of these faces (their faces were deleted); returns how many."""
    root = crops_root(home)
    if not root.is_dir():
        return 0
    by_bucket: dict[Path, set[str]] = {}
    for face_id in face_ids:
        by_bucket.setdefault(_bucket(home, int(face_id)), set()).add(str(int(face_id)))
    removed = 0
    for bucket, ids in by_bucket.items():
        if not bucket.is_dir():
            continue
        for entry in os.scandir(bucket):
            if entry.name.split("-", 1)[0] in ids:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def read_catalog_photo(settings: Settings, path: str, content_hash: str | None) -> RawFile:
    """The bytes of a catalog photo, only if they are still what was indexed.

    The file must be a regular file (a symlink is followed only to what it names now, and the
    hash check then refuses anything but the indexed bytes); any mismatch is NotFound."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise NotFound(f"{path}: the photo is no longer on disk") from exc
    if not stat.S_ISREG(st.st_mode):
        raise NotFound(f"{path}: not a regular file")
    if st.st_size > settings.max_file_bytes:
        raise NotFound(f"{path}: over the {settings.max_file_bytes} byte limit")
    data = p.read_bytes()
    digest = hash_bytes(data)
    if content_hash is None or digest != content_hash:
        raise NotFound(f"{path}: the photo changed on disk since it was indexed; "
                       "it is served again once re-indexed")
    return RawFile(path=p, data=data, size=len(data), mtime=st.st_mtime, content_hash=digest)


def face_crop(rgb: Image.Image, bbox: tuple[float, float, float, float], size: int) -> Image.Image:
    """A square crop centred on the box with some context, padded grey past the edges."""
    x1, y1, x2, y2 = bbox
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    square = Image.new("RGB", (box[2] - box[0], box[3] - box[1]), (128, 128, 128))
    square.paste(rgb.crop(box), (0, 0))  # PIL pads out-of-image areas with black; repaint
    inner = (max(0, -box[0]), max(0, -box[1]),
             min(square.width, rgb.width - box[0]), min(square.height, rgb.height - box[1]))
    if inner != (0, 0, square.width, square.height):
        grey = Image.new("RGB", square.size, (128, 128, 128))
        grey.paste(square.crop(inner), inner[:2])
        square = grey
    return square.resize((size, size), Image.LANCZOS)


def downscaled_photo(settings: Settings, photo: PhotoRow, max_side: int) -> bytes:
    """A catalog photo, upright and at most max_side pixels on its longer side, as JPEG."""
    raw = read_catalog_photo(settings, photo.path, photo.content_hash)
    try:
        rgb = Image.fromarray(decode_raw(raw, max_pixels=settings.max_image_pixels))
    except UnreadableImage as exc:
        raise NotFound(str(exc)) from exc
    rgb.thumbnail((max_side, max_side), Image.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()



def decode_face_photo(settings: Settings, face: BrowseFace) -> Image.Image:
    """The catalog photo a face is in, decoded (NotFound when it is gone, changed or unreadable)."""
    raw = read_catalog_photo(settings, face.path, face.content_hash)
    try:
        return Image.fromarray(decode_raw(raw, max_pixels=settings.max_image_pixels))
    except UnreadableImage as exc:
        raise NotFound(str(exc)) from exc

class CropCache:
    """Makes face crops on first request (every face of that photo at once) and keeps the
    cache under settings.crop_cache_mb, dropping the oldest crops first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._make_lock = threading.Lock()
        self._written = 0

    def cached(self, face_id: int, key: str) -> Path | None:
        """The cached crop of a face made with this key (photo hash and box), if present:
        crops of deleted faces are removed with them, so no catalog lookup is needed."""
        path = _bucket(self.settings.home, face_id) / f"{face_id}-{key}.jpg"
        return path if path.is_file() else None

    def path_for(self, face_id: int) -> Path:
        """The crop file of a face, made if needed; NotFound for an unknown face or a photo
        that is gone or changed."""
        with open_for_reading(self.settings) as store:
            face = store.face_source(face_id)
            path = crop_path(self.settings.home, face)
            if path.exists():
                return path
            _, siblings = store.photo(face.image_id)
        self.make(siblings)
        if not path.exists():
            raise NotFound(f"no crop for face {face_id}")
        return path

    def make(self, faces: list[BrowseFace]) -> None:
        """Write the missing crops of faces that share one photo (it is decoded once)."""
        with self._make_lock:  # two pages asking for faces of one photo decode it once
            written = self._make(faces)
        if not written:
            return
        with self._lock:
            self._written += written
            due = self._written >= PRUNE_EVERY
            if due:
                self._written = 0
        if due:
            self.prune()

    def _make(self, faces: list[BrowseFace]) -> int:
        home = self.settings.home
        missing = [f for f in faces if not crop_path(home, f).exists()]
        if not missing:
            return 0
        rgb = decode_face_photo(self.settings, missing[0])
        for face in missing:
            target = crop_path(home, face)
            target.parent.mkdir(parents=True, exist_ok=True)
            for old in target.parent.glob(f"{face.face_id}-*.jpg"):
                if old != target:
                    old.unlink(missing_ok=True)  # an older face that had this id
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                face_crop(rgb, face.bbox, self.settings.crop_size).save(
                    fh, "JPEG", quality=JPEG_QUALITY)
            os.replace(tmp, target)
        return len(missing)

    def prune(self) -> int:
        """Remove the oldest crops until the cache fits its bound; returns how many."""
        root = crops_root(self.settings.home)
        if not root.is_dir():
            return 0
        files = []
        total = 0
        for entry in root.glob("*/*.jpg"):
            try:
                st = entry.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, entry))
            total += st.st_size
        limit = self.settings.crop_cache_mb * 1024 * 1024
        removed = 0
        if total <= limit:
            return 0
        for _, size, entry in sorted(files):
            if total <= limit * 0.9:
                break
            entry.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            log.info("crop cache: removed %d old crops to stay under %d MB", removed,
                     self.settings.crop_cache_mb)
        return removed
