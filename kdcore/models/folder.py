"""The model format: a folder with timm's ``config.json`` + ``model.safetensors`` and a ``README.md`` card.

Every teacher and student is built by :func:`create_model` (timm underneath) and stored by :func:`save_model`
in timm's Hub layout, so ``timm.create_model("hf-hub:OWNER/NAME", pretrained=True)`` loads a pushed folder.
kdcore's own fields (input convention, class names, training summary) sit under the ``"kdcore"`` key.
Weights are read from safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models.factory import count_params

WEIGHTS = "model.safetensors"


@dataclass
class ModelInfo:
    """What travels with a model's weights."""

    arch: str
    class_names: list[str]
    spec: InputSpec
    summary: dict = field(default_factory=dict)
    path: str | None = None
    model_args: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)  # fitted temperature (kdcore.models.calibration)
    ood: dict = field(default_factory=dict)  # fitted out-of-distribution check (kdcore.models.ood)

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else self.arch


def save_model(
    model: nn.Module,
    folder: str | os.PathLike,
    info: ModelInfo,
    half: bool = False,
    card: str | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (fp16 if ``half``) and a model card into ``folder``."""
    from kdcore.models.card import model_card_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = info.spec
    model_config = {
        "label_names": list(info.class_names),
        "pretrained_cfg": {
            "input_size": (spec.channels, spec.size, spec.size),
            "test_input_size": (spec.channels, spec.size, spec.size),
            "test_crop_pct": 1.0,
            "mean": (spec.mean,) * spec.channels,
            "std": (spec.std,) * spec.channels,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "license": "apache-2.0",
            # trained from scratch here: claim no ImageNet origin
            "hf_hub_id": None, "url": None, "tag": None, "origin_url": None, "paper_ids": None,
            "notes": ("kdcore brain-MRI model",),
        },
        "kdcore": {"input": spec.to_dict(), "class_names": list(info.class_names), "summary": info.summary},
    }
    for key in ("calibration", "ood"):
        if getattr(info, key):
            model_config["kdcore"][key] = getattr(info, key)
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)  # e.g. from channels_last training
    timm.models.save_for_hf(model, str(folder), model_config=model_config, safe_serialization=True)
    if half:
        from safetensors.torch import save_file

        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(folder / WEIGHTS))
    stats = info.ood.get("stats")
    if stats and info.path and Path(info.path).resolve() != folder.resolve():  # the OOD statistics travel too
        shutil.copyfile(Path(info.path) / stats, folder / stats)
    info = ModelInfo(info.arch, info.class_names, spec, info.summary, str(folder), read_config(folder)["model_args"],
                     info.calibration, info.ood)
    (folder / "README.md").write_text(card or model_card_text(info, count_params(model)))
    return folder


def read_config(folder: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a model folder, with ``model_args`` always present."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise KDCoreError(f"{folder}: not a model folder (no config.json)")
    try:
        cfg = json.loads(path.read_text())
    except ValueError as e:
        raise KDCoreError(f"{path}: unreadable config ({e})") from None
    cfg.setdefault("model_args", {})
    return cfg


def load_folder(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Load a local model folder in eval mode, in float32 (:func:`kdcore.models.load_model` takes any reference).

    Raises :class:`KDCoreError` with one line for a missing folder, missing weights or mismatched weights.
    """
    folder = Path(folder)
    if not folder.exists():
        raise KDCoreError(f"{folder}: no such model folder")
    cfg = read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise KDCoreError(f"{folder}: no {WEIGHTS} (only safetensors weights are loaded)")
    pcfg = cfg.get("pretrained_cfg", {})
    kd = cfg.get("kdcore", {})
    if "input" in kd:
        spec = InputSpec.from_dict(kd["input"])
    else:  # a plain timm export: derive the convention from its pretrained_cfg
        c, _, s = pcfg.get("input_size", (1, 128, 128))
        spec = InputSpec(size=s, channels=c, mean=pcfg.get("mean", (0.5,))[0], std=pcfg.get("std", (0.5,))[0])
    class_names = list(kd.get("class_names") or cfg.get("label_names") or range(cfg["num_classes"]))
    args = {k: v for k, v in cfg["model_args"].items() if k not in ("num_classes", "pretrained")}
    args.setdefault("in_chans", spec.channels)
    try:
        model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"], **args)
        state = load_file(str(weights))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, KeyError, OSError) as e:
        reason = str(e).splitlines()[0]
        raise KDCoreError(f"{folder}: weights do not fit {cfg.get('architecture')} ({reason})") from None
    info = ModelInfo(cfg["architecture"], class_names, spec, kd.get("summary", {}), str(folder), args,
                     kd.get("calibration", {}), kd.get("ood", {}))
    return model.to(device).eval(), info
