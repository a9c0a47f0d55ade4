"""Tiny synthetic data shared by the tests: MRI-like 4-class slices and class folders of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from kdcore.paths import samples_dir

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
REPO = Path(__file__).resolve().parent.parent
SAMPLES = samples_dir()


def synthetic_slice(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A dark disc ("head") with its own smooth texture ("anatomy": distinct slices are not near-copies of each
    other) and a bright blob whose place depends on the class (none for class 2)."""
    yy, xx = np.mgrid[:size, :size] / size
    noise = rng.random((size, size))
    texture = gaussian_filter(noise, size / 32)
    texture = (texture - texture.mean()) / texture.std()
    img = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.16) * (0.35 + 0.08 * texture) + 0.05 * noise
    centres = {0: (0.35, 0.35), 1: (0.35, 0.65), 3: (0.68, 0.5)}
    if label in centres:
        cy, cx = centres[label]
        cy, cx = cy + rng.normal(0, 0.03), cx + rng.normal(0, 0.03)
        img += 0.6 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.006)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 12, seed: int = 0, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(synthetic_slice(label, rng, size)).save(root / name / f"{name}_{i:03d}.jpg", quality=95)
    return root


def write_dicom(path: Path, pixels: np.ndarray, **attrs) -> Path:
    """A DICOM file (explicit VR little endian, with preamble) of uint16/int16 ``(H, W)`` or frames ``(F, H, W)``;
    ``attrs`` are set on the dataset last (e.g. RescaleSlope, WindowCenter, PhotometricInterpretation)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = len(pixels)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(pixels.dtype == np.int16)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """A NIfTI-1 file (``.nii`` or gzipped ``.nii.gz``, by ``path``'s name) of ``volume`` (default affine: RAS)."""
    import nibabel as nib

    nib.Nifti1Image(volume, np.eye(4) if affine is None else affine).to_filename(str(path))
    return path


def axial_volume(image: np.ndarray, depth: int = 1) -> np.ndarray:
    """A RAS volume ``(X, Y, depth)`` whose every axial slice is shown as ``image`` ``(H, W)``: the inverse of the
    radiological display kdcore reads NIfTI slices in."""
    return np.repeat(image.T[::-1, ::-1, None], depth, axis=2)


def write_split(data: Path, path: Path, train_per_class: int = 9) -> Path:
    """A split file of a :func:`make_dataset` folder: the first ``train_per_class`` slices of each class train."""
    from kdcore.data.split import Split

    ids = sorted(str(p.relative_to(data)) for p in data.glob("*/*.jpg"))
    Split([i for i in ids if int(i[-7:-4]) < train_per_class], [i for i in ids if int(i[-7:-4]) >= train_per_class],
          {}).save(path)
    return path
