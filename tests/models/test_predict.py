"""Predictions for image files: the same slice as PNG, DICOM and NIfTI, and the ``predict`` command."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from kdcore.cli import main
from kdcore.data.imageio import open_image, to_grey_array
from kdcore.models import load_model
from kdcore.models.predict import predict_files
from tests.helpers import SAMPLES, axial_volume, write_dicom, write_nifti


@pytest.fixture(scope="module")
def student():
    return load_model("student")


def _full_range(path) -> np.ndarray:
    """A sample slice as uint8 ``(H, W)`` with more than 1 % of its pixels at 0 and at 255, so that every format's
    intensity scaling (own min..max, 1st-99th percentiles) gives back exactly these pixels."""
    grey = to_grey_array(open_image(path))
    lo, hi = np.percentile(grey, [2, 98])
    return np.round(np.clip((grey - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _write_formats(folder, name: str, pixels: np.ndarray) -> list:
    inverted = ((255 - pixels.astype(np.uint16)) * 4).astype(np.uint16)  # MONOCHROME1, stored 4x
    return [
        _save_png(folder / f"{name}.png", pixels),
        write_dicom(folder / f"{name}.dcm", inverted, PhotometricInterpretation="MONOCHROME1", RescaleSlope=0.25,
                    RescaleIntercept=0, WindowCenter=127.5, WindowWidth=10000),
        write_nifti(folder / f"{name}.nii.gz", axial_volume(pixels.astype(np.float32), 3)),
    ]


def _save_png(path, pixels):
    Image.fromarray(pixels).save(path)
    return path


def test_same_slice_in_every_format_gives_the_same_prediction(tmp_path, student):
    model, info = student
    files = []
    for sample in ("glioma_1.jpg", "meningioma_1.jpg"):
        files += _write_formats(tmp_path, sample.split(".")[0], _full_range(SAMPLES / sample))
    rows, skipped = predict_files(model, info, files, batch=64)
    assert not skipped and [r["format"] for r in rows] == ["PNG", "DICOM", "NIfTI"] * 2
    for png, *others in (rows[:3], rows[3:]):
        for other in others:
            assert other["class"] == png["class"]
            assert np.allclose(list(other["probs"].values()), list(png["probs"].values()), atol=1e-5)
    assert rows[2]["slice"] == 1 and rows[2]["slices"] == 3
    assert [r["class"] for r in rows[::3]] == ["glioma", "meningioma"]
    in_twos, _ = predict_files(model, info, files, batch=2)
    assert [r["probs"] for r in in_twos] == pytest.approx([r["probs"] for r in rows])


def test_calibration_and_ood_fill_their_columns(tmp_path, student):
    model, info = student
    info = dataclasses.replace(info, calibration={}, ood={})  # the bundled student without its fitted check
    files = [SAMPLES / "glioma_1.jpg"]
    (plain,), _ = predict_files(model, info, files)
    assert plain["calibrated_probs"] is plain["in_distribution"] is plain["ood_score"] is None
    fitted = dataclasses.replace(info, calibration={"temperature": 2.0}, ood={"score": "energy", "threshold": 0.0})
    (row,), _ = predict_files(model, fitted, files)
    assert row["probs"] == pytest.approx(plain["probs"], abs=1e-5)
    assert row["confidence"] == pytest.approx(row["calibrated_probs"]["glioma"])
    assert row["confidence"] < plain["confidence"]  # T = 2 softens a confident prediction
    assert row["in_distribution"] is (row["ood_score"] <= 0.0)


def test_predict_command_skips_and_counts_a_bad_file(tmp_path, capsys):
    data = tmp_path / "scans"
    (data / "sub").mkdir(parents=True)
    files = _write_formats(data / "sub", "g", _full_range(SAMPLES / "glioma_1.jpg"))
    (data / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01" * 40)
    (data / "notes.txt").write_text("not an image name: ignored")
    out = tmp_path / "out"
    assert main(["predict", "--model", "student", "--data", str(data), "--json", str(out / "p.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped 1 unreadable file(s) of 4" in err and "broken.dcm: DICOM file without an image" in err
    report = json.loads((out / "p.json").read_text())
    assert [s["file"] for s in report["skipped"]] == [str(data / "broken.dcm")]
    assert sorted(r["file"] for r in report["predictions"]) == sorted(map(str, files))
    assert {r["class"] for r in report["predictions"]} == {"glioma"}
    assert {"in_distribution", "ood_score", "calibrated_probs", "intensity"} <= set(report["predictions"][0])

    args = ["predict", "--model", "student", "--data", str(data), "--csv", str(out / "p.csv"), "--slice", "0"]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "p.csv").open()))
    assert len(rows) == 3 and {r["slice"] for r in rows} == {"0"}
    assert {"p_glioma", "calibrated_glioma", "format", "slices", "ood_score"} <= set(rows[0])


def test_predict_command_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "x.nii"
    bad.write_bytes(b"junk")
    assert main(["predict", "--model", "student", "--image", str(bad)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {bad}: not a readable image (UnidentifiedImageError)"]
    volume = write_nifti(tmp_path / "v.nii", np.ones((4, 4, 3), np.float32))
    assert main(["predict", "--model", "student", "--image", str(volume), "--slice", "3"]) == 2
    assert "slice 3 out of range 0..2 (3 axial slices)" in capsys.readouterr().err
    assert main(["predict", "--model", "student", "--image", str(volume)]) == 0
    assert "[NIfTI slice 1 of 3]" in capsys.readouterr().out
