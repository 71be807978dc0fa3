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
    digest = hashlib.blake2b(data, digest_size=20).hexdigest()
    return RawFile(path=path, data=data, size=len(data), mtime=stat.st_mtime,
                   content_hash=digest)


def decode_raw(raw: RawFile, *, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Decode to an upright RGB array (EXIF orientation applied), or raise UnreadableImage."""
    _register_heif()
    path = raw.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw.data))
            width, height = img.size
            if width * height > max_pixels:
                raise UnreadableImage(
                    path,
                    f"image declares {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                    f"over the {max_pixels / 1e6:.0f} MP limit (possible decompression bomb; "
                    "raise FACEIDX_MAX_IMAGE_PIXELS if it is genuine)",
                )
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


def decode(path: Path, *, max_pixels: int, max_bytes: int) -> npt.NDArray[np.uint8]:
    """Read and decode one file; every failure is an UnreadableImage naming the reason."""
    try:
        raw = read_raw(path, max_bytes=max_bytes)
    except FileNotFoundError as exc:
        raise UnreadableImage(path, "no such file") from exc
    return decode_raw(raw, max_pixels=max_pixels)


def bounded_copy(rgb: npt.NDArray[np.uint8], max_side: int) -> tuple[npt.NDArray[np.uint8], float]:
    """A copy whose longer side is at most `max_side`, and the factor to scale boxes back up."""
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return rgb, 1.0
    scale = max_side / longest
    small = Image.fromarray(rgb).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
    )
    return np.asarray(small), 1.0 / scale
