"""The out-of-distribution check: scores, the fit written into the model folder, noise flagged, files travel."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from kdcore.engine.calibrate import calibrate_model
from kdcore.engine.metrics import auroc
from kdcore.errors import KDCoreError
from kdcore.models import load_model, save_model
from kdcore.models.hub import MODEL_FILES
from kdcore.models.ood import OOD_FILE, check, fit_gaussian, scores, synthetic_ood
from tests.helpers import synthetic_slice, write_split


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tiny_data, tmp_path_factory):
    """A copy of the tiny model with its temperature and OOD check fitted on the tiny synthetic data (9 train and
    3 validation images per class)."""
    tmp = tmp_path_factory.mktemp("fitted")
    folder = tmp / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    split = write_split(tiny_data, tmp / "split.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDCORE_CACHE", str(tmp / "cache"))
        result = calibrate_model(str(folder), str(tiny_data), str(split), ood_per_kind=16)
    return folder, result


def test_mahalanobis_and_energy_scores():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    feats = torch.randn(400, 3, generator=g) + 4 * labels[:, None]
    stats = fit_gaussian(feats, labels, 2)
    assert torch.allclose(stats["means"][1], torch.full((3,), 4.0), atol=0.3)
    near, far = scores("mahalanobis", None, torch.tensor([[0.0, 0, 0], [20.0, -20, 0]]), stats=stats)
    assert near < 1.5 < 20 < far
    confident, unsure = scores("energy", torch.tensor([[10.0, 0], [0.0, 0]]), None)
    assert confident < unsure  # lower energy = more in distribution
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    with pytest.raises(KDCoreError, match="unknown OOD score"):
        scores("nope", torch.zeros(1, 2), None)


def test_synthetic_ood_kinds():
    mri = torch.randint(0, 256, (5, 32, 32), dtype=torch.uint8)
    sets = synthetic_ood(mri, 3)
    assert set(sets) == {"noise", "blank", "gradient", "text", "inverted"}
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in sets.values())
    assert torch.equal(synthetic_ood(mri, 3)["text"], sets["text"])  # the recipe is seeded


def test_fit_written_into_folder_and_flags_noise(fitted):
    folder, result = fitted
    kd = json.loads((folder / "config.json").read_text())["kdcore"]
    assert kd["calibration"] == result["calibration"] and kd["ood"] == result["ood"]
    ood = kd["ood"]
    assert ood["score"] in ("energy", "mahalanobis") and ood["val_flagged"] <= 0.02
    assert (folder / OOD_FILE).is_file() == (ood["score"] == "mahalanobis")
    model, info = load_model(folder)
    noise = np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8)
    verdicts = [check(model, info, img) for img in noise]
    assert all(v.flagged for v in verdicts)
    assert "> threshold" in verdicts[0].why()
    assert check(model, info, synthetic_slice(0, np.random.default_rng(5), 32)).score < verdicts[0].score


def test_unfitted_model_has_no_check(tiny_model_dir):
    model, info = load_model(tiny_model_dir)
    assert check(model, info, np.zeros((32, 32), np.uint8)) is None


def test_stats_travel_with_the_model(fitted, tmp_path):
    folder, _ = fitted
    model, info = load_model(folder)
    if not info.ood.get("stats"):
        pytest.skip("the energy score was chosen: no statistics file")
    assert OOD_FILE in MODEL_FILES
    copy = save_model(model, tmp_path / "copy", info)
    assert (copy / OOD_FILE).read_bytes() == (folder / OOD_FILE).read_bytes()
    (copy / OOD_FILE).unlink()
    model, info = load_model(copy)
    with pytest.raises(KDCoreError, match="missing"):
        check(model, info, np.zeros((32, 32), np.uint8))


def test_diagnose_warns_on_noise_and_keeps_the_predictions(fitted, tmp_path):
    from PIL import Image

    from kdcore.service import OOD_WARNING, ModelStore, diagnose

    folder, _ = fitted
    store = ModelStore({"teacher": str(folder), "student": str(folder)})
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    d = diagnose(noise, store, methods=())
    assert d.teacher.flagged and d.student.flagged and d.teacher.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert OOD_WARNING in d.warning() and "teacher: mahalanobis score" in d.warning()
