"""Decoding photos safely: every failure is an UnreadableImage with a reason a person can use."""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UnreadableImage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)

_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - optional at run time
            log.debug("pillow-heif not installed; HEIC files will be refused")
        _heif_registered = True


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode (16-bit grey, CMYK, palette, alpha) as 8-bit RGB on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if float(arr.max(initial=0)) > 255 else 255.0
        img = Image.fromarray((arr / scale * 255.0).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class RawFile:
    """A file's bytes and the facts the catalog keeps about it."""

    path: Path
    data: bytes
    size: int
    mtime: float
    content_hash: str


def read_raw(path: Path, *, max_bytes: int) -> RawFile:
    """Read and hash a file; FileNotFoundError passes through (the file vanished)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read file ({exc.strerror or exc})") from exc
    if stat.st_size == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    if stat.st_size > max_bytes:
        raise UnreadableImage(path, f"file is {stat.st_size} bytes, over the {max_bytes} limit")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read file ({exc.strerror or exc})") from exc
    return RawFile(path=path, data=data, size=len(data), mtime=stat.st_mtime,
                   content_hash=hash_bytes(data))


def hash_bytes(data: bytes) -> str:
    """A photo's content hash as the catalog keeps it (images.content_hash): BLAKE2b-160."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def decode_raw(raw: RawFile, *, max_pixels: int, reduce: int = 1) -> npt.NDArray[np.uint8]:
    """Decode to an upright RGB array (EXIF orientation applied), or raise UnreadableImage.

    reduce > 1 lets a JPEG decode at 1/2, 1/4 or 1/8 size in its DCT (Pillow's draft mode),
    which is several times faster; the result is at least 1/reduce of the full size. Other
    formats always decode at full size."""
    _register_heif()
    path = raw.path
    try:
        with warnings.catch_warnings():
            # Pillow warns past its own limit (89.5 MP) and refuses at twice it, whatever
            # max_pixels says: the check below is the limit, Pillow's a backstop above it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = max_pixels
            img = Image.open(io.BytesIO(raw.data))
            width, height = img.size
            if width * height > max_pixels:
                raise UnreadableImage(
                    path,
                    f"image declares {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                    f"over the {max_pixels / 1e6:.0f} MP limit (possible decompression bomb; "
                    "raise FACEIDX_MAX_IMAGE_PIXELS if it is genuine)",
                )
            if reduce > 1 and img.format == "JPEG":
                img.draft(img.mode, (max(1, width // reduce), max(1, height // reduce)))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(_to_rgb(img), dtype=np.uint8)
    except UnreadableImage:
        raise
    except UnidentifiedImageError as exc:
        raise UnreadableImage(path, "not an image (unknown or unsupported format)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(path, f"refused as a possible decompression bomb ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or "premature end" in reason.lower():
            reason = f"truncated or incomplete file ({reason})"
        raise UnreadableImage(path, f"cannot decode image: {reason}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise UnreadableImage(path, f"unexpected pixel layout {rgb.shape}")
    return rgb


class Photo:
    """One photo for a model, decoded only as far as needed: a reduced copy for detection
    (JPEG draft mode), the full resolution only when a face needs it.

    Sizes and boxes are in upright full-resolution pixels. A Photo pickles as its bytes and its
    detection copy (worker processes decode the rest themselves), never as full-size pixels.
    """

    JPEG_REDUCTIONS = (8, 4, 2)
    DRAFT_SLACK = 0.9
    """A JPEG's detection copy may come out of draft mode up to 10% under the bound (a
    4032x3024 photo at 1/4, 1008 px, instead of 1/2 then a resize to 1024: half the decoding
    cost; faces 1.6% smaller for the detector)."""

    def __init__(self, raw: RawFile | None, *, max_pixels: int,
                 rgb: npt.NDArray[np.uint8] | None = None) -> None:
        self.raw = raw
        self.max_pixels = max_pixels
        self._decoded: dict[int, npt.NDArray[np.uint8]] = {}
        self._detection: tuple[int, npt.NDArray[np.uint8], float] | None = None
        self._size: tuple[int, int] | None = None
        if rgb is not None:
            self._decoded[1] = rgb
            self._size = (int(rgb.shape[1]), int(rgb.shape[0]))

    @classmethod
    def of(cls, image: Photo | npt.NDArray[np.uint8]) -> Photo:
        """A Photo as is, or an already decoded upright RGB array wrapped as one."""
        return image if isinstance(image, Photo) else cls(None, max_pixels=0, rgb=image)

    @property
    def name(self) -> str:
        return str(self.raw.path) if self.raw is not None else "(pixels)"

    @property
    def size(self) -> tuple[int, int]:
        """Upright full-resolution (width, height)."""
        if self._size is None:
            assert self.raw is not None
            self._size = _upright_size(self.raw)
        return self._size

    def _is_jpeg(self) -> bool:
        return self.raw is not None and self.raw.data[:3] == b"\xff\xd8\xff"

    def _decode(self, reduce: int) -> npt.NDArray[np.uint8]:
        if reduce not in self._decoded:
            assert self.raw is not None
            rgb = decode_raw(self.raw, max_pixels=self.max_pixels, reduce=reduce)
            if reduce == 1:
                self._size = (int(rgb.shape[1]), int(rgb.shape[0]))
            elif self._size is None:
                self._size = _upright_size(self.raw)
            self._decoded[reduce] = rgb
        return self._decoded[reduce]

    def _factor(self, rgb: npt.NDArray[np.uint8]) -> float:
        return max(self.size) / max(rgb.shape[:2])

    def detection_copy(self, max_side: int) -> tuple[npt.NDArray[np.uint8], float]:
        """A copy whose longer side is at most max_side, and the factor from it to full size.

        A JPEG decodes at the smallest draft scale (1/8, 1/4, 1/2) that keeps at least
        DRAFT_SLACK of max_side, so most large photos need no resize after decoding."""
        if self._detection is not None and self._detection[0] == max_side:
            return self._detection[1], self._detection[2]
        reduce = 1
        if self._is_jpeg() and 1 not in self._decoded:
            longest = max(_upright_size(self.raw)) if self.raw is not None else 0
            reduce = next((r for r in self.JPEG_REDUCTIONS
                           if longest // r >= max_side * self.DRAFT_SLACK), 1)
        rgb = self._decode(reduce)
        small, scale = bounded_copy(rgb, max_side)
        self._detection = (max_side, small, scale * self._factor(rgb))
        return small, self._detection[2]

    def at_least(self, fraction: float) -> tuple[npt.NDArray[np.uint8], float]:
        """The cheapest copy with at least `fraction` of full resolution (1: full), and the
        factor from it to full size."""
        for _, rgb in sorted(self._decoded.items(), reverse=True):
            if 1.0 / self._factor(rgb) >= fraction * 0.999:
                return rgb, self._factor(rgb)
        reduce = 1
        if self._is_jpeg():
            reduce = next((r for r in self.JPEG_REDUCTIONS if 1.0 / r >= fraction), 1)
        try:
            rgb = self._decode(reduce)
        except UnreadableImage as exc:
            if not self._decoded:
                raise
            # the reduced copy decoded but this one does not: use the best copy there is
            log.warning("%s: using a reduced copy (%s)", self.name, exc.reason)
            rgb = self._decoded[min(self._decoded)]
        return rgb, self._factor(rgb)

    def decoded_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every copy decoded so far, smallest first."""
        return sorted((int(a.shape[1]), int(a.shape[0])) for a in self._decoded.values())

    def full(self) -> npt.NDArray[np.uint8]:
        """The full-resolution pixels (or, should only a reduced copy decode, the largest)."""
        rgb, factor = self.at_least(1.0)
        if factor > 1.0001:
            h, w = self.size[1], self.size[0]
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        return rgb

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if self.raw is not None:
            state["_decoded"] = {}
        return state


def _upright_size(raw: RawFile) -> tuple[int, int]:
    """The (width, height) a file shows once its EXIF orientation is applied (header only)."""
    with Image.open(io.BytesIO(raw.data)) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block: exif_transpose ignores it too
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def decode(path: Path, *, max_pixels: int, max_bytes: int) -> npt.NDArray[np.uint8]:
    """Read and decode one file; every failure is an UnreadableImage naming the reason."""
    try:
        raw = read_raw(path, max_bytes=max_bytes)
    except FileNotFoundError as exc:
        raise UnreadableImage(path, "no such file") from exc
    return decode_raw(raw, max_pixels=max_pixels)


def bounded_copy(rgb: npt.NDArray[np.uint8], max_side: int) -> tuple[npt.NDArray[np.uint8], float]:
    """A copy whose longer side is at most `max_side`, and the factor to scale boxes back up.

    OpenCV's bilinear resize down to half size (every source pixel still falls under an
    output pixel's 2x2 taps, so it does not alias), area averaging beyond: both several times
    faster than Pillow's filtered bilinear, which was a third of the detection copy's cost for
    photos between 1 and 2 times the bound (a JPEG's draft mode only halves)."""
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return rgb, 1.0
    import cv2

    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    mode = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
    return cv2.resize(np.ascontiguousarray(rgb), size, interpolation=mode), 1.0 / scale
