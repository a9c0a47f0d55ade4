"""Shared fixtures: a tiny synthetic 4-class MRI-like dataset and a tiny model folder (all made on the fly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import CLASSES, make_dataset


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
