"""Decoding of image files into one input convention, with clear errors for bad files.

The convention (stored with every model as its :class:`InputSpec`): greyscale, one channel, padded to a square on
black, resized to ``size`` x ``size`` with antialiasing, scaled to [0, 1] and normalised by ``mean``/``std``.
Every mode the dataset holds (L, RGB, RGBA, P, I;16, I) and PNG data under a ``.jpg`` name decode the same way;
DICOM and NIfTI files (told by content, read by :mod:`kdcore.data.medical`) give one slice as a float image.
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
#: Leading bytes read to tell DICOM and NIfTI files from the rest (:func:`kdcore.data.medical.sniff`).
HEAD_BYTES = 4096


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


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and how it was read.

    ``notes``: ``format`` (JPEG, PNG, DICOM, NIfTI...), ``slice`` (the slice or frame used) of ``slices``, and
    ``intensity`` (how intensities were mapped). DICOM and NIfTI slices are float images (mode ``F``) in [0, 1].
    """

    image: Image.Image
    notes: dict


def read_image(source: ImageSource, slice_index: int | None = None) -> DecodedImage:
    """Open and fully decode an image file, bytes or PIL image, DICOM and NIfTI included (told by content).

    ``slice_index`` picks the DICOM frame or the NIfTI axial slice (default: the middle one); a plain image has
    the one slice 0. Raises :class:`ImageDecodeError` with a one-line reason for anything unreadable.
    """
    if isinstance(source, Image.Image):
        return DecodedImage(source, _plain_notes(source, "image", slice_index))
    name = "upload" if isinstance(source, bytes) else os.fspath(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("the upload is empty (0 bytes)")
        head = source[:HEAD_BYTES]
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"{name}: the file is empty (0 bytes)")
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
    from kdcore.data import medical  # here: medical imports ImageDecodeError from this module

    kind = medical.sniff(head)
    if kind is None:
        img = _open_plain(source, name)
        return DecodedImage(img, _plain_notes(img, name, slice_index))
    if (len(source) if isinstance(source, bytes) else Path(source).stat().st_size) > medical.MAX_BYTES:
        raise ImageDecodeError(f"{name}: file larger than {medical.MAX_BYTES >> 20} MiB")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    read = medical.read_dicom if kind == "dicom" else medical.read_nifti
    grey, notes = read(data, name, slice_index)
    return DecodedImage(Image.fromarray(grey), notes)  # float32: mode F


def open_image(source: ImageSource) -> Image.Image:
    """Open and fully decode an image (DICOM and NIfTI: the middle slice); raise :class:`ImageDecodeError` with a
    one-line reason otherwise."""
    return read_image(source).image


def _plain_notes(img: Image.Image, name: str, slice_index: int | None) -> dict:
    if slice_index not in (None, 0):
        raise ImageDecodeError(f"{name}: slice {slice_index} out of range (a 2-D image has the one slice 0)")
    return {"format": img.format or "image", "slice": 0, "slices": 1, "intensity": f"as stored ({img.mode})"}


def _open_plain(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    """A file or bytes through PIL, fully loaded; one-line errors."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb") as fp:
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
