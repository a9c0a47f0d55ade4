"""Decoding every image mode to the one input convention, and one-line errors for bad files."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kdcore.data.imageio import ImageDecodeError, decode_to_uint8, open_image


def _save(img: Image.Image, path, fmt=None):
    img.save(path, format=fmt)
    return path


@pytest.fixture
def grey():
    a = np.zeros((40, 60), np.uint8)
    a[10:30, 20:40] = 200
    return a


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "I"])
def test_every_mode_decodes_to_the_same_grey_square(tmp_path, grey, mode):
    base = decode_to_uint8(Image.fromarray(grey, "L"), 32)
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(grey.astype(np.int32) * 257)
    elif mode == "RGBA":
        rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
        img = Image.fromarray(rgba, "RGBA")
    else:
        img = Image.fromarray(grey, "L").convert(mode)
    out = decode_to_uint8(_save(img, tmp_path / "x.png"), 32)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - base.astype(int)).max() <= 2


def test_png_under_jpg_name_and_non_square_padding(tmp_path, grey):
    p = _save(Image.fromarray(grey), tmp_path / "actually_png.jpg", fmt="PNG")
    out = decode_to_uint8(p, 60)
    assert out.shape == (60, 60)
    # 40x60 is padded with 10 black rows above and below
    assert out[:9].max() == 0 and out[-9:].max() == 0 and out[30].max() == 200


def test_transparent_pixels_become_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white but fully transparent
    assert decode_to_uint8(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"), 8).max() == 0


def _huge_png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(
        b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"this is a text file, not an image", "not a readable image"),
        ("truncated", "truncated"),
        ("huge", "larger than"),
    ],
)
def test_bad_files_give_one_line_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[:300]
    elif content == "huge":
        content = _huge_png_header(20000, 20000)
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as e:
        open_image(path)
    assert reason in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ImageDecodeError):
        open_image(content)  # the same judgement for raw bytes (uploads)


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        open_image(tmp_path / "nope.png")
