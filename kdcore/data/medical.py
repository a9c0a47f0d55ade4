"""DICOM and NIfTI files as one greyscale slice in [0, 1], with notes on how it was read.

- DICOM (pydicom): the modality LUT (RescaleSlope/RescaleIntercept), then the first WindowCenter/WindowWidth, or
  the VOI LUT when there is no window; MONOCHROME1 is inverted; the result is scaled to its own min..max. A
  multi-frame file gives one frame, by default the middle one.
- NIfTI-1/2 (nibabel, ``.nii`` or gzipped ``.nii.gz``): the volume is turned to RAS+ and one axial slice is taken,
  by default the middle one, shown in radiological convention (anterior up, the patient's right on the left); its
  intensities are scaled by the slice's own 1st and 99th percentiles.

Formats are told by content, not by name: DICOM by ``DICM`` at byte 128, NIfTI by its header magic (inside gzip).
pydicom and nibabel are imported on first use, so reading JPEG and PNG files never pays for them.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib

import numpy as np

from kdcore.data.imageio import MAX_PIXELS, ImageDecodeError

#: Largest medical file read (after gunzip): a volume is held in memory whole.
MAX_BYTES = 1 << 30
#: File name endings of the formats read here (files are still told by content).
EXTENSIONS = (".dcm", ".dicom", ".nii", ".nii.gz")

_GZIP = b"\x1f\x8b"
_NIFTI_MAGIC = {344: b"n+1\x00", 4: b"n+2\x00"}  # offset -> magic of single-file NIfTI-1 and NIfTI-2


def _gunzip(data: bytes, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of gzipped ``data`` (a partial stream gives what it holds)."""
    try:
        return zlib.decompressobj(wbits=31).decompress(data, limit + 1)
    except zlib.error:
        return b""


def sniff(head: bytes) -> str | None:
    """``"dicom"``, ``"nifti"`` or None (anything else) from a file's first bytes (at least 352 of them)."""
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:2] == _GZIP:
        head = _gunzip(head, 352)
    if any(head[at : at + 4] == magic for at, magic in _NIFTI_MAGIC.items()):
        return "nifti"
    return None


def _pick(index: int | None, count: int, name: str, what: str) -> int:
    """The slice asked for (default: the middle one), or a one-line error when out of range."""
    k = count // 2 if index is None else index
    if not 0 <= k < count:
        raise ImageDecodeError(f"{name}: slice {index} out of range 0..{count - 1} ({count} {what})")
    return k


def _unit_range(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(H, W)`` linearly mapped from ``lo..hi`` to [0, 1] (clipped; all zeros when ``hi <= lo``) as float32."""
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def read_dicom(data: bytes, name: str, index: int | None = None) -> tuple[np.ndarray, dict]:
    """One DICOM frame as float32 ``(H, W)`` in [0, 1], and its notes (format, slice, slices, intensity)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

    logging.getLogger("pydicom").setLevel(logging.ERROR)  # a file reads or gives one line, not pydicom's warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # pydicom raises many types for a damaged header; the user needs one line
        raise ImageDecodeError(f"{name}: damaged DICOM file ({type(e).__name__}: {_first_line(e)})") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError(f"{name}: DICOM file without an image (no pixel data)")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * cols > MAX_PIXELS:
        raise ImageDecodeError(f"{name}: image is {cols}x{rows}, larger than the {MAX_PIXELS:,}-pixel limit")
    frames = int(ds.get("NumberOfFrames") or 1)
    k = _pick(index, frames, name, "frames")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ImageDecodeError(f"{name}: DICOM pixel data in {syntax.name} cannot be decoded") from None
        if not decoder.is_available:
            raise ImageDecodeError(f"{name}: compressed DICOM ({syntax.name}) needs a decoder that is not installed "
                                   f"({'; or '.join(decoder.missing_dependencies)})")
    try:
        ds.pixel_array_options(index=k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as e:  # decoders raise many types for damaged pixel data
        raise ImageDecodeError(f"{name}: damaged DICOM pixel data ({type(e).__name__}: {_first_line(e)})") from None
    steps = []
    if pixels.ndim == 3:  # colour (the decoder gives RGB): luminance as PIL's "L"
        pixels = pixels @ np.array([0.299, 0.587, 0.114])
        steps.append("colour to grey")
    else:
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        pixels = apply_modality_lut(pixels, ds)
        if (slope, intercept) != (1.0, 0.0) or "ModalityLUTSequence" in ds:
            steps.append("modality LUT" if "ModalityLUTSequence" in ds else f"rescale x{slope:g} {intercept:+g}")
        if "WindowCenter" in ds and "WindowWidth" in ds:
            centre, width = _first(ds["WindowCenter"]), _first(ds["WindowWidth"])
            steps.append(f"window centre {centre:g} width {width:g}")
        elif "VOILUTSequence" in ds:
            pixels = np.round(pixels).astype(np.int64)  # a LUT is indexed by integer modality values
            steps.append("VOI LUT")
        pixels = apply_voi_lut(pixels, ds, index=0, prefer_lut=False)
    out = _unit_range(pixels, float(pixels.min()), float(pixels.max()))
    steps.append("scaled to its own range")
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = 1.0 - out
        steps.append("inverted (MONOCHROME1)")
    return out, {"format": "DICOM", "slice": k, "slices": frames, "intensity": ", ".join(steps)}


def _first(elem) -> float:
    """The first value of a possibly multi-valued DICOM element."""
    return float(elem.value[0] if elem.VM > 1 else elem.value)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def read_nifti(data: bytes, name: str, index: int | None = None) -> tuple[np.ndarray, dict]:
    """One axial NIfTI slice as float32 ``(H, W)`` in [0, 1], and its notes (format, slice, slices, intensity)."""
    import nibabel as nib

    if data[:2] == _GZIP:
        data = _gunzip(data, MAX_BYTES)
        if len(data) > MAX_BYTES:
            raise ImageDecodeError(f"{name}: NIfTI volume larger than {MAX_BYTES >> 20} MiB uncompressed")
    kind = nib.Nifti2Image if data[4:8] == _NIFTI_MAGIC[4] else nib.Nifti1Image
    try:
        img = kind.from_bytes(data)
        shape = img.shape
        if len(shape) > 3 and np.prod(shape[3:]) > 1:
            raise ImageDecodeError(f"{name}: NIfTI of shape {shape} holds several volumes; give one 3-D volume")
        shape3 = (*shape[:3], 1, 1)[:3]
        if shape3[0] * shape3[1] > MAX_PIXELS:
            raise ImageDecodeError(f"{name}: slice is {shape3[0]}x{shape3[1]}, larger than the "
                                   f"{MAX_PIXELS:,}-pixel limit")
        volume = np.asarray(img.dataobj, dtype=np.float32).reshape(shape3)
        ornt = nib.orientations.io_orientation(img.affine)
        volume = nib.orientations.apply_orientation(volume, ornt)  # RAS+: axis 2 runs inferior -> superior
    except ImageDecodeError:
        raise
    except Exception as e:  # nibabel raises many types for a damaged file; the user needs one line
        raise ImageDecodeError(f"{name}: damaged NIfTI file ({type(e).__name__}: {_first_line(e)})") from None
    k = _pick(index, volume.shape[2], name, "axial slices")
    axial = volume[::-1, ::-1, k].T  # rows anterior -> posterior, columns the patient's right -> left
    finite = axial[np.isfinite(axial)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 0.0))
    out = _unit_range(np.nan_to_num(axial, nan=lo, posinf=hi, neginf=lo), float(lo), float(hi))
    notes = {"format": "NIfTI", "slice": k, "slices": volume.shape[2],
             "intensity": f"1st-99th percentile {lo:.4g}..{hi:.4g} scaled to [0, 1]"}
    return out, notes
