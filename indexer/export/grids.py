"""thumbnail_grid.png: a cluster's faces in a grid, the medoid first, with a readable title.

A big index writes tens of thousands of grids, so text is drawn cheaply: fonts load once, a
note (the same for many grids) is rendered once, and a caption (a face id) is put together
from glyphs of its characters rendered once each. The PNG is written by `write_png` (every row
"Up"-filtered, zlib level 1): about 3x faster than Pillow's encoder, which tries every filter
on every row, for files within a few percent of its size.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

GAP = 4
HEADER = 52
BACKGROUND = (255, 255, 255)
MEDOID_FRAME = (220, 30, 30)
TITLE_SIZE, NOTE_SIZE, CAPTION_SIZE = 18, 13, 11


def grid_size(cells: int, columns: int, thumb: int) -> tuple[int, int]:
    """Width and height in pixels of a grid of `cells` thumbnails."""
    rows = max(1, math.ceil(cells / columns))
    return columns * (thumb + GAP) + GAP, HEADER + rows * (thumb + GAP) + GAP


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=16)
def _note(text: str, width: int) -> Image.Image:
    """The grey second header line, rendered once per distinct text."""
    strip = Image.new("RGB", (width, HEADER - 30), BACKGROUND)
    ImageDraw.Draw(strip).text((0, 0), text, fill=(70, 70, 70), font=_font(NOTE_SIZE))
    return strip


@lru_cache(maxsize=128)
def _glyph(char: str) -> npt.NDArray[np.uint8]:
    """White-on-black tile of one caption character (its advance width, a fixed height)."""
    font = _font(CAPTION_SIZE)
    width = max(1, round(font.getlength(char)))
    tile = Image.new("L", (width, CAPTION_SIZE + 3), 0)
    ImageDraw.Draw(tile).text((0, 0), char, fill=255, font=font)
    return np.asarray(tile)


def _caption(text: str) -> npt.NDArray[np.uint8]:
    """A caption label: white text on black, with a 3-pixel margin."""
    inner = np.concatenate([_glyph(c) for c in text], axis=1)
    label = np.zeros((inner.shape[0] + 3, inner.shape[1] + 6), dtype=np.uint8)
    label[1:1 + inner.shape[0], 3:3 + inner.shape[1]] = inner
    return label


def grid_image(thumbs: Sequence[npt.NDArray[np.uint8]], captions: Sequence[str], title: str,
               note: str, *, columns: int, thumb: int, framed_first: bool) -> Image.Image:
    """Thumbnails left to right, top to bottom, each captioned (its face id), under a
    two-line header."""
    width, height = grid_size(len(thumbs), columns, thumb)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[...] = BACKGROUND[0] if len(set(BACKGROUND)) == 1 else BACKGROUND  # a memset
    for i, (cell, caption) in enumerate(zip(thumbs, captions, strict=True)):
        x = GAP + (i % columns) * (thumb + GAP)
        y = HEADER + GAP + (i // columns) * (thumb + GAP)
        pixels[y:y + thumb, x:x + thumb] = cell
        label = _caption(caption)[:thumb, :thumb]
        h, w = label.shape
        pixels[y + thumb - h:y + thumb, x:x + w] = label[:, :, None]
        if i == 0 and framed_first:
            pixels[y - 2:y + thumb + 2, x - 2:x + 1] = MEDOID_FRAME
            pixels[y - 2:y + thumb + 2, x + thumb - 1:x + thumb + 2] = MEDOID_FRAME
            pixels[y - 2:y + 1, x - 2:x + thumb + 2] = MEDOID_FRAME
            pixels[y + thumb - 1:y + thumb + 2, x - 2:x + thumb + 2] = MEDOID_FRAME
    canvas = Image.fromarray(pixels)
    ImageDraw.Draw(canvas).text((GAP + 2, 6), title, fill=(0, 0, 0), font=_font(TITLE_SIZE))
    canvas.paste(_note(note, width - GAP - 2), (GAP + 2, 30))
    return canvas


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def write_png(image: Image.Image, path: Path, level: int = 1) -> None:
    """`image` (RGB) as an 8-bit RGB PNG at `path`: each row "Up"-filtered (its difference
    from the row above, mostly zeros in a grid), then zlib at `level`."""
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    flat = pixels.reshape(height, width * 3)
    raw = np.empty((height, width * 3 + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter type Up (the first row's "row above" is zeros)
    raw[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=raw[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(raw.data, level)) + _chunk(b"IEND", b""))
