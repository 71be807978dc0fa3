"""thumbnail_grid.png: a cluster's faces in a grid, the medoid first, with a readable title."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

GAP = 4
HEADER = 52
BACKGROUND = (255, 255, 255)
MEDOID_FRAME = (220, 30, 30)


def grid_size(cells: int, columns: int, thumb: int) -> tuple[int, int]:
    """Width and height in pixels of a grid of `cells` thumbnails."""
    rows = max(1, math.ceil(cells / columns))
    return columns * (thumb + GAP) + GAP, HEADER + rows * (thumb + GAP) + GAP


def grid_image(thumbs: Sequence[npt.NDArray[np.uint8]], captions: Sequence[str], title: str,
               note: str, *, columns: int, thumb: int, framed_first: bool) -> Image.Image:
    """Thumbnails left to right, top to bottom, each captioned (its face id), under a
    two-line header."""
    width, height = grid_size(len(thumbs), columns, thumb)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP + 2, 6), title, fill=(0, 0, 0), font=ImageFont.load_default(size=18))
    draw.text((GAP + 2, 30), note, fill=(70, 70, 70), font=ImageFont.load_default(size=13))
    small = ImageFont.load_default(size=11)
    for i, (cell, caption) in enumerate(zip(thumbs, captions, strict=True)):
        x = GAP + (i % columns) * (thumb + GAP)
        y = HEADER + GAP + (i // columns) * (thumb + GAP)
        canvas.paste(Image.fromarray(cell), (x, y))
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=small)
        draw.rectangle((x, y + thumb - (bottom - top) - 6, x + right - left + 6, y + thumb - 1),
                       fill=(0, 0, 0))
        draw.text((x + 3 - left, y + thumb - (bottom - top) - 3 - top), caption,
                  fill=(255, 255, 255), font=small)
        if i == 0 and framed_first:
            draw.rectangle((x - 2, y - 2, x + thumb + 1, y + thumb + 1), outline=MEDOID_FRAME,
                           width=3)
    return canvas
