"""Shared fixtures: a tiny synthetic 4-class MRI-like dataset and a tiny model folder (all made on the fly)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdcore.paths import samples_dir

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
REPO = Path(__file__).resolve().parent.parent
SAMPLES = samples_dir()


def synthetic_slice(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A dark disc ("head") with a bright blob whose place depends on the class (none for class 2)."""
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.35 * (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.16) + 0.05 * rng.random((size, size))
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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path_factory.getbasetemp() / "kdcore-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """``<tmp>/data/<class>/*.jpg``: 4 classes x 12 synthetic 64x64 slices."""
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained ``test_resnet`` model folder for 32x32 greyscale input and the 4 classes."""
    import torch

    from kdcore.data.imageio import InputSpec
    from kdcore.models import ModelInfo, create_model, save_model

    torch.manual_seed(0)
    spec = InputSpec(size=32)
    model = create_model("test_resnet", len(CLASSES), spec)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny", ModelInfo("test_resnet", CLASSES, spec))
