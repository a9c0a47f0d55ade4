"""Decoding of image files into one input convention, with clear errors for bad files.

The convention (stored with every model as its :class:`InputSpec`): greyscale, one channel, padded to a square on
black, resized to ``size`` x ``size`` with antialiasing, scaled to [0, 1] and normalised by ``mean``/``std``.
Every mode the dataset holds (L, RGB, RGBA, P, I;16, I) and PNG data under a ``.jpg`` name decode the same way.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | Image.Image

#: Largest image (in pixels) decoded; a 20000x20000 upload is refused before it fills memory.
MAX_PIXELS = 64_000_000


class ImageDecodeError(ValueError):
    """A file that is not a readable image (empty, truncated, not an image, too large)."""


@dataclass(frozen=True)
class InputSpec:
    """How a model expects its input: ``(B, channels, size, size)`` floats normalised by mean/std."""

    size: int = 128
    channels: int = 1
    mean: float = 0.18
    std: float = 0.19

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(**{k: d[k] for k in ("size", "channels", "mean", "std") if k in d})


def open_image(source: ImageSource) -> Image.Image:
    """Open and fully decode an image; raise :class:`ImageDecodeError` with a one-line reason otherwise."""
    if isinstance(source, Image.Image):
        return source
    name = "upload" if isinstance(source, bytes) else os.fspath(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("the upload is empty (0 bytes)")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"{name}: the file is empty (0 bytes)")
        fp = path.open("rb")
    try:
        with fp:
            img = Image.open(fp)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageDecodeError(f"{name}: image is {w}x{h}, larger than the {MAX_PIXELS:,}-pixel limit")
            img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"{name}: image is larger than the {MAX_PIXELS:,}-pixel limit") from None
    except UnidentifiedImageError as e:
        raise ImageDecodeError(f"{name}: not a readable image ({type(e).__name__})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"{name}: damaged or truncated image ({e})") from None
    return img


def to_grey_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode to a float32 greyscale array in [0, 1], shape ``(H, W)``.

    16-bit and 32-bit integer images are read on the 16-bit scale (0..65535), float images as [0, 1];
    alpha is composited on black.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        return np.clip(a if img.mode == "F" else a / 65535.0, 0.0, 1.0)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def square_resize(grey: np.ndarray, size: int) -> np.ndarray:
    """Pad ``(H, W)`` to a square on black (centred), then resize to ``(size, size)``; returns uint8."""
    h, w = grey.shape
    side = max(h, w)
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = grey
    pil = Image.fromarray(np.round(canvas * 255.0).astype(np.uint8), mode="L")
    if side != size:
        pil = pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(pil, dtype=np.uint8)


def decode_to_uint8(source: ImageSource, size: int) -> np.ndarray:
    """A file (or bytes, or a PIL image) to the cached representation: uint8 ``(size, size)`` greyscale."""
    return square_resize(to_grey_array(open_image(source)), size)
