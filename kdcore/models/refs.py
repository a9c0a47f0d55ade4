"""Model references: a bundled name (``teacher``, ``student``), ``hf-hub:OWNER/NAME`` or a folder path."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.models.folder import ModelInfo, load_folder
from kdcore.models.hub import pull_model
from kdcore.paths import BUNDLED_MODELS, bundled_model


def resolve_model_path(ref: str | os.PathLike) -> Path:
    """``teacher``/``student`` -> the bundled folder; ``hf-hub:OWNER/NAME`` -> its local snapshot; else a path."""
    ref = str(ref)
    if ref in BUNDLED_MODELS:
        return bundled_model(ref)
    if ref.startswith("hf-hub:"):
        return pull_model(ref[len("hf-hub:"):])
    return Path(ref)


def load_model(ref: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Load the model ``ref`` names in eval mode, in float32; one-line :class:`KDCoreError` when it cannot."""
    folder = resolve_model_path(ref)
    if not folder.exists():
        raise KDCoreError(f"{ref}: no such model folder")
    return load_folder(folder, device)


def load_init(ref: str | os.PathLike, class_names: list[str], size: int) -> tuple[nn.Module, ModelInfo]:
    """:func:`load_model` for fine-tuning (``--init``): refuses a model of other classes or input size."""
    model, info = load_model(ref)
    if list(info.class_names) != list(class_names) or info.spec.size != size:
        raise KDCoreError(f"--init {ref}: classes {info.class_names} at {info.spec.size} px differ from the "
                          f"run's {list(class_names)} at {size} px")
    return model, info
