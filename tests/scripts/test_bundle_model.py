"""Making a trained model folder a bundled one: calibration required, fp16 checked, notes in the card."""

from __future__ import annotations

import shutil

import pytest
from safetensors import safe_open

from kdcore.engine.calibrate import calibrate_model
from kdcore.errors import KDCoreError
from kdcore.models import load_model
from kdcore.models.ood import OOD_FILE
from scripts.bundle_model import bundle
from tests.helpers import write_split


def test_bundle_keeps_calibration_checks_fp16_and_adds_notes(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, src)
    with pytest.raises(KDCoreError, match="not calibrated"):
        bundle(src, tmp_path / "bundled")
    calibrate_model(str(src), str(tiny_data), str(write_split(tiny_data, tmp_path / "split.json")), ood_per_kind=16)
    dst = bundle(src, tmp_path / "bundled", half=True, data=str(tiny_data), notes={"device": "a 2-core CPU"})
    _, info = load_model(dst)
    assert info.summary["device"] == "a 2-core CPU" and info.summary["weights"].startswith("fp16: the same ")
    assert info.calibration == load_model(src)[1].calibration and (dst / OOD_FILE).is_file()
    with safe_open(str(dst / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if "weight" in k} == {"F16"}  # noqa: SIM118
    again = bundle(dst, dst, half=True, data=str(tiny_data), notes={"teacher": "the bundled teacher"})
    assert load_model(again)[1].summary["device"] == "a 2-core CPU" and (again / OOD_FILE).is_file()  # in place
