"""Temperature scaling: recovers a known temperature, ECE by hand, argmax unchanged, the config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdcore.engine.calibrate import calibration_fields
from kdcore.engine.metrics import reliability
from kdcore.models import load_model, save_model
from kdcore.models.calibration import calibrated_probs, fit_temperature, nll, temperature


def _logits_with_temperature(t: float, n: int = 20000, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``t * z`` whose labels are drawn from ``softmax(z)``: the right temperature is exactly ``t``."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, k, generator=g)
    y = torch.multinomial(z.softmax(1), 1, generator=g)[:, 0]
    return t * z, y


@pytest.mark.parametrize("t", [0.5, 1.0, 2.5])
def test_temperature_recovers_known_value(t):
    logits, y = _logits_with_temperature(t)
    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(t, rel=0.05)
    assert nll(logits, y, fitted) <= nll(logits, y) + 1e-9


def test_ece_by_hand():
    # bin [0.6, 0.667): two images at 0.61 and 0.65, one right -> |0.5 - 0.63| * 2/4
    # bin [0.933, 1.0]: two images at 0.95 and 1.0, both right -> |1 - 0.975| * 2/4
    probs = np.array([[0.61, 0.39], [0.35, 0.65], [0.95, 0.05], [0.0, 1.0]])
    y = np.array([0, 0, 0, 1])
    rel = reliability(y, probs, bins=15)
    assert rel["ece"] == pytest.approx(0.5 * 0.13 + 0.5 * 0.025)
    assert [b["count"] for b in rel["bins"]] == [2, 2]


def test_apply_changes_no_argmax(tiny_model_dir):
    _, info = load_model(tiny_model_dir)
    logits = torch.randn(500, 4, generator=torch.Generator().manual_seed(1)) * 5
    for t in (0.1, 0.7, 3.0, 15.0):
        info.calibration = {"temperature": t}
        probs = calibrated_probs(logits, info)
        assert torch.equal(probs.argmax(1), logits.argmax(1))
        assert torch.allclose(probs.sum(1), torch.ones(500))


def test_fields_and_config_round_trip(tiny_model_dir, tmp_path):
    logits, y = _logits_with_temperature(2.0, n=3000)
    fields = calibration_fields(logits, y, "split.json:val")
    assert fields["ece_after"] < fields["ece_before"] and fields["nll_after"] < fields["nll_before"]
    model, info = load_model(tiny_model_dir)
    assert temperature(info) == 1.0  # none fitted
    info.calibration = fields
    folder = save_model(model, tmp_path / "m", info)
    assert json.loads((folder / "config.json").read_text())["kdcore"]["calibration"] == fields
    _, again = load_model(folder)
    assert again.calibration == fields and temperature(again) == fields["temperature"]


def test_evaluate_applies_the_temperature(tiny_model_dir, tiny_data, tmp_path):
    from kdcore.engine.evaluate import evaluate

    model, info = load_model(tiny_model_dir)
    plain = evaluate(str(tiny_model_dir), str(tiny_data), latency_repeats=1)
    info.calibration = {"temperature": 0.05}
    sharp = evaluate(str(save_model(model, tmp_path / "sharp", info)), str(tiny_data), latency_repeats=1)
    assert sharp["accuracy"] == plain["accuracy"] and sharp["confusion_matrix"] == plain["confusion_matrix"]
    assert plain["temperature"] == 1.0 and plain["ece"] == plain["uncalibrated"]["ece"]
    assert sharp["temperature"] == 0.05 and sharp["uncalibrated"]["ece"] == pytest.approx(plain["ece"])
    assert sharp["ece"] != pytest.approx(plain["ece"]) and sharp["nll"] > plain["nll"]
