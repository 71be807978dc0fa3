"""Decoding the files a real library contains (../shared/faces/broken)."""

from pathlib import Path

import numpy as np
import pytest

from indexer.errors import UnreadableImage
from indexer.imageio import bounded_copy, decode

READABLE = ["png_named.jpg", "cmyk.jpg", "gray16.png", "palette.gif", "rgba.png",
            "exif_rotated_face.jpg"]
REFUSED = {
    "zero_bytes.jpg": "empty file",
    "truncated_half.jpg": "truncated",
    "not_an_image.jpg": "not an image",
    "bomb_40000x40000.png": "decompression bomb",
}
LIMITS = {"max_pixels": 120_000_000, "max_bytes": 1 << 29}


@pytest.mark.parametrize("name", READABLE)
def test_readable_files_decode_to_rgb(faces_dir: Path, name: str) -> None:
    rgb = decode(faces_dir / "broken" / name, **LIMITS)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.std() > 10  # real picture content, not a blank conversion


@pytest.mark.parametrize(("name", "reason"), sorted(REFUSED.items()))
def test_bad_files_are_refused_with_a_reason(faces_dir: Path, name: str, reason: str) -> None:
    with pytest.raises(UnreadableImage) as info:
        decode(faces_dir / "broken" / name, **LIMITS)
    assert reason in info.value.reason
    assert name in str(info.value)


def test_exif_orientation_is_honoured(faces_dir: Path) -> None:
    from PIL import Image

    path = faces_dir / "broken" / "exif_rotated_face.jpg"
    stored = Image.open(path).size  # (w, h) as the pixels lie in the file
    rgb = decode(path, **LIMITS)
    assert (rgb.shape[1], rgb.shape[0]) == (stored[1], stored[0])  # Orientation=6 swaps axes


def test_pixel_limit_is_a_setting(faces_dir: Path) -> None:
    with pytest.raises(UnreadableImage, match="megapixels"):
        decode(faces_dir / "broken" / "cmyk.jpg", max_pixels=1000, max_bytes=1 << 29)


def test_a_photo_between_pillows_limit_and_ours_decodes(tmp_path: Path) -> None:
    """Pillow warns from 89.5 MP; a 90 MP panorama is under the 120 MP setting and decodes,
    and the same file is refused, naming our limit, when the setting is lower."""
    from PIL import Image

    from indexer.imageio import decode_raw, read_raw

    path = tmp_path / "panorama.jpg"
    Image.new("RGB", (15_000, 6_000), (90, 140, 200)).save(path, quality=50)
    raw = read_raw(path, max_bytes=1 << 29)
    rgb = decode_raw(raw, max_pixels=120_000_000, reduce=8)
    assert rgb.shape[1] * 8 >= 15_000 and rgb.shape[0] * 8 >= 6_000
    with pytest.raises(UnreadableImage, match="over the 80 MP limit"):
        decode_raw(raw, max_pixels=80_000_000, reduce=8)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="no such file"):
        decode(tmp_path / "nope.jpg", **LIMITS)


def test_bounded_copy_scales_long_side() -> None:
    rgb = np.zeros((3000, 1500, 3), dtype=np.uint8)
    small, scale = bounded_copy(rgb, 1000)
    assert small.shape[:2] == (1000, 500)
    assert scale == pytest.approx(3.0)
    same, one = bounded_copy(rgb[:500, :400], 1000)
    assert same.shape[:2] == (500, 400) and one == 1.0


def test_photo_decodes_a_reduced_jpeg_for_detection_and_full_size_on_demand(
        faces_dir: Path) -> None:
    import pickle

    from indexer.imageio import Photo, read_raw

    path = faces_dir / "broken" / "exif_rotated_face.jpg"  # 1665x2048 upright, EXIF-rotated
    full = decode(path, **LIMITS)
    photo = Photo(read_raw(path, max_bytes=LIMITS["max_bytes"]), max_pixels=LIMITS["max_pixels"])
    small, scale = photo.detection_copy(800)
    assert photo.size == (full.shape[1], full.shape[0])  # upright, learnt without a full decode
    assert max(small.shape[:2]) <= 800 and scale == pytest.approx(2048 / max(small.shape[:2]))
    assert small.shape[0] > small.shape[1]  # EXIF orientation applied to the reduced copy too
    assert photo.decoded_sizes() == [(833, 1024)]  # JPEG draft: decoded at 1/2 only
    half, factor = photo.at_least(0.4)  # enough resolution already there: no new decode
    assert factor == pytest.approx(2.0, rel=0.01) and photo.decoded_sizes() == [(833, 1024)]
    clone = pickle.loads(pickle.dumps(photo))  # workers get bytes and the small copy only
    assert clone.decoded_sizes() == [] and clone.detection_copy(800)[0].shape == small.shape
    np.testing.assert_array_equal(photo.full(), full)
    # a bound just over the 1/2 draft's size: the draft is the copy, no full decode or resize
    near = Photo(read_raw(path, max_bytes=LIMITS["max_bytes"]), max_pixels=LIMITS["max_pixels"])
    assert near.detection_copy(1100)[0].shape[:2] == (1024, 833)
    assert near.decoded_sizes() == [(833, 1024)]
    png = Photo.of(decode(faces_dir / "broken" / "rgba.png", **LIMITS))
    assert png.detection_copy(100)[1] == pytest.approx(2.5)
