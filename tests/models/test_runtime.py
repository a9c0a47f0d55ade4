"""ONNX Runtime predictions: parity with PyTorch for the shipped models and timm families, export cache, fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcore.data.imageio import InputSpec
from kdcore.models import create_model, load_model
from kdcore.models.runtime import OnnxRunner, onnx_runner, weights_digest
from kdcore.paths import samples_dir


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["teacher", "student", "student-tiny"])
def test_shipped_models_match_pytorch(name):
    model, info = load_model(name)
    x = torch.randn(3, info.spec.channels, info.spec.size, info.spec.size)  # batch 3: the batch axis is dynamic
    runner = onnx_runner(model, info.spec)
    with torch.inference_mode():
        ref = model(x)
    out = runner(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("arch", ["mobilenetv2_035", "mobilenetv3_small_050", "efficientnet_lite0"])
def test_mobile_families_match_pytorch(arch):
    spec = InputSpec(size=64)
    torch.manual_seed(0)
    model = create_model(arch, 4, spec).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        ref = model(x)
    assert torch.allclose(onnx_runner(model, spec)(x), ref, atol=1e-4)


def test_export_is_cached_per_weights(tmp_path):
    spec = InputSpec(size=32)
    model = create_model("resnet10t_w16", 4, spec)
    first = onnx_runner(model, spec).path
    mtime = first.stat().st_mtime_ns
    assert onnx_runner(model, spec).path == first and first.stat().st_mtime_ns == mtime  # not exported again
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert weights_digest(model, spec) != first.stem  # new weights, new graph
    assert isinstance(onnx_runner(model, spec), OnnxRunner)


def test_store_falls_back_to_pytorch(monkeypatch):
    from kdcore.models import runtime
    from kdcore.service import ModelStore, diagnose

    def broken(*a, **k):
        raise RuntimeError("no ONNX here")

    monkeypatch.setattr(runtime, "onnx_runner", broken)
    store = ModelStore.with_defaults()
    model, _ = store.get("student")
    assert store.runner("student") is model
    sample = sorted(samples_dir().glob("*.jpg"))[0]
    d = diagnose(sample, store, methods=())
    assert d.student.runtime == "pytorch" and d.teacher.runtime == "pytorch"
    assert np.isclose(d.student.probs.sum(), 1.0)


def test_diagnose_uses_onnxruntime_with_same_answer():
    from kdcore.paths import samples_dir
    from kdcore.service import ModelStore, diagnose, predict

    store = ModelStore.with_defaults()
    sample = sorted(samples_dir().glob("*.jpg"))[0]
    d = diagnose(sample, store, methods=())
    assert d.teacher.runtime == d.student.runtime == "onnxruntime"
    model, info = store.get("student")
    ref = predict(model, info, d.student.pixels, "student", methods=())
    assert ref.runtime == "pytorch"
    np.testing.assert_allclose(d.student.probs, ref.probs, atol=1e-5)


def test_the_tiny_student_is_in_the_model_list_and_diagnoses():
    from kdcore.paths import samples_dir
    from kdcore.service import ModelStore, diagnose

    store = ModelStore.with_defaults()
    assert store.names() == ["teacher", "student", "student-tiny"]
    sample = sorted(samples_dir().glob("glioma_*.jpg"))[0]
    d = diagnose(sample, store, student="student-tiny", methods=("lrp", "gradcam"))
    tiny = d.student
    assert tiny.name == "student-tiny" and tiny.params < 0.01 * d.teacher.params  # under 1% of the teacher
    assert np.isclose(tiny.probs.sum(), 1.0) and tiny.ood is not None  # calibrated, with its OOD check
    assert set(tiny.overlays) == {"lrp", "gradcam"} and tiny.maps["lrp"].shape == (192, 192)  # its own input size
