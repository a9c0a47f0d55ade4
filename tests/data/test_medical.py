"""DICOM and NIfTI slices through kdcore.data.imageio: intensity pipeline, orientation, slices, one-line errors."""

import gzip
import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

from kdcore.data.dataset import load_records
from kdcore.data.imageio import ImageDecodeError, decode_to_uint8, read_image
from tests.helpers import axial_volume, write_dicom, write_nifti

RAMP = np.arange(1000, dtype=np.uint16).reshape(10, 100)


def _grey(source, slice_index=None) -> np.ndarray:
    decoded = read_image(source, slice_index)
    assert decoded.image.mode == "F"
    return np.asarray(decoded.image)


def test_dicom_rescale_then_first_window(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=[0, 500], WindowWidth=[400, 2000])
    hu = 2.0 * RAMP - 1000
    expected = np.clip((hu + 0.5) / 399 + 0.5, 0, 1)  # DICOM's linear window, centre 0 width 400
    assert np.abs(_grey(path) - expected).max() < 1e-6
    notes = read_image(path).notes
    assert notes["format"] == "DICOM" and (notes["slice"], notes["slices"]) == (0, 1)
    assert "rescale x2 -1000" in notes["intensity"] and "window centre 0 width 400" in notes["intensity"]


def test_dicom_voi_lut_without_window_and_own_range(tmp_path):
    lut = Dataset()
    lut.LUTDescriptor = [1000, 0, 16]
    lut.add_new("LUTData", "OW", (np.arange(1000) ** 2 // 1000).astype(np.uint16).tobytes())
    path = write_dicom(tmp_path / "lut.dcm", RAMP, VOILUTSequence=[lut])
    expected = (RAMP.astype(float) ** 2 // 1000) / (999 * 999 // 1000)  # a curve, not a line
    assert np.abs(_grey(path) - expected).max() < 1e-6
    assert "VOI LUT" in read_image(path).notes["intensity"]
    plain = _grey(write_dicom(tmp_path / "plain.dcm", RAMP + 300))  # no window, no LUT: its own min..max
    assert plain.min() == 0 and plain.max() == 1


def test_monochrome1_is_inverted(tmp_path):
    mono2 = _grey(write_dicom(tmp_path / "m2.dcm", RAMP))
    mono1 = _grey(write_dicom(tmp_path / "m1.dcm", RAMP, PhotometricInterpretation="MONOCHROME1"))
    assert np.allclose(mono1, 1 - mono2)


def test_dicom_frames_middle_by_default(tmp_path):
    frames = np.zeros((5, 8, 8), np.uint16)
    for f in range(5):
        frames[f, f, f] = 100
    path = write_dicom(tmp_path / "multi.dcm", frames)
    for index, frame in ((None, 2), (4, 4), (0, 0)):
        decoded = read_image(path, index)
        assert (decoded.notes["slice"], decoded.notes["slices"]) == (frame, 5)
        assert np.argwhere(np.asarray(decoded.image) == 1).tolist() == [[frame, frame]]
    with pytest.raises(ImageDecodeError, match=r"slice 5 out of range 0\.\.4 \(5 frames\)"):
        read_image(path, 5)


def test_nifti_middle_axial_slice_in_radiological_view(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (6, 9)).astype(np.float32)  # as it should be shown: 6 rows, 9 columns
    volume = axial_volume(image, 5) * np.arange(1, 6)  # slice z holds (z + 1) * image
    lo, hi = np.percentile(image, [1, 99])
    expected = np.clip((image - lo) / (hi - lo), 0, 1)  # scaling removes the slice's factor
    ras = write_nifti(tmp_path / "ras.nii.gz", volume)
    decoded = read_image(ras)
    assert decoded.notes["format"] == "NIfTI" and (decoded.notes["slice"], decoded.notes["slices"]) == (2, 5)
    assert np.abs(np.asarray(decoded.image) - expected).max() < 1e-5
    # the same anatomy stored left-posterior-inferior first reads the same: orientation comes from the affine
    lpi = write_nifti(tmp_path / "lpi.nii", volume[::-1, ::-1, ::-1].copy(), np.diag([-1.0, -1, -1, 1]))
    assert np.abs(_grey(lpi) - expected).max() < 1e-5
    assert read_image(lpi, 0).notes["slice"] == 0
    # bytes (an upload), gzipped or not, read the same as the file
    assert np.array_equal(_grey(ras.read_bytes()), _grey(ras))
    assert np.array_equal(_grey(gzip.decompress(ras.read_bytes())), _grey(ras))


def test_nifti_percentiles_clip_outliers(tmp_path):
    image = np.tile(np.linspace(0, 100, 50, dtype=np.float32), (50, 1))
    image[0, 0] = 1e6  # one hot voxel must not darken the slice
    grey = _grey(write_nifti(tmp_path / "hot.nii", axial_volume(image)))
    assert grey[0, 0] == 1 and 0.45 < grey[25, 25] < 0.55


def test_dataset_folders_list_medical_files(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    write_dicom(tmp_path / "a" / "x.dcm", RAMP)
    write_nifti(tmp_path / "b" / "y.nii.gz", axial_volume(RAMP.astype(np.float32), 3))
    records = load_records(tmp_path)
    assert records.ids == ["a/x.dcm", "b/y.nii.gz"]
    assert all(decode_to_uint8(s, 32).shape == (32, 32) for s in records.sources)


def _compressed(path, syntax, frame: bytes, **attrs):
    """``path`` rewritten with one encapsulated ``frame`` in ``syntax``."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_errors_are_one_line(tmp_path):
    cases = {
        "junk.dcm": b"\x00" * 128 + b"DICM" + b"\xff" * 50,
        "truncated.nii.gz": write_nifti(tmp_path / "v.nii.gz", np.ones((8, 8, 4), np.float32)).read_bytes()[:60],
        "truncated.nii": gzip.decompress(write_nifti(tmp_path / "w.nii.gz", np.ones((8, 8, 4))).read_bytes())[:400],
        "random.nii": bytes(range(256)) * 4,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageDecodeError) as err:
            read_image(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)
    four_d = write_nifti(tmp_path / "t.nii", np.ones((4, 4, 3, 2), np.float32))
    with pytest.raises(ImageDecodeError, match="several volumes"):
        read_image(four_d)
    no_pixels = write_dicom(tmp_path / "p.dcm", RAMP)
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        read_image(no_pixels)
    with pytest.raises(ImageDecodeError, match=r"slice 3 out of range 0\.\.0 \(1 axial slices\)"):
        read_image(write_nifti(tmp_path / "s.nii", np.ones((4, 4), np.float32)), 3)


def test_compressed_dicom_without_its_codec(tmp_path):
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(ImageDecodeError, match=r"compressed DICOM \(JPEG-LS Lossless.*\) needs a decoder") as err:
        read_image(_compressed(write_dicom(tmp_path / "ls.dcm", RAMP), JPEGLSLossless, b"\xff\xd8 not JPEG-LS"))
    assert "\n" not in str(err.value) and "pylibjpeg" in str(err.value)


def _resaved(path, **attrs):
    ds = pydicom.dcmread(path)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_colour_and_jpeg_compressed_dicom(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2:5, 2:5] = (255, 0, 0)
    rgb[6, 6] = (255, 255, 255)
    colour = _resaved(write_dicom(tmp_path / "rgb.dcm", np.zeros((8, 8), np.uint16)), SamplesPerPixel=3,
                      PhotometricInterpretation="RGB", PlanarConfiguration=0, BitsAllocated=8, BitsStored=8,
                      HighBit=7, PixelData=rgb.tobytes())
    grey = _grey(colour)
    assert grey[3, 3] == pytest.approx(0.299) and grey[6, 6] == 1 and grey[0, 0] == 0  # luminance, own range
    buf = io.BytesIO()
    Image.fromarray(np.repeat(np.arange(0, 256, 4, dtype=np.uint8)[None], 64, 0)).save(buf, "JPEG", quality=95)
    jpeg = _compressed(write_dicom(tmp_path / "jpeg.dcm", np.zeros((64, 64), np.uint16)), JPEGBaseline8Bit,
                       buf.getvalue(), BitsAllocated=8, BitsStored=8, HighBit=7)
    ramp = _grey(jpeg)[32]
    assert ramp[0] < 0.02 and ramp[-1] > 0.98 and np.all(np.diff(ramp) > -0.02)  # decoded through Pillow
