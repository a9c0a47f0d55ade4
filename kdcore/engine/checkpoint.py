"""Atomic training checkpoints in safetensors + JSON (model, optimizer and progress; no pickles)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CKPT = "checkpoint.safetensors"
CKPT_META = "checkpoint.json"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    return tensors, sd["param_groups"]


def save_checkpoint(
    run_dir: Path, module_state: dict[str, torch.Tensor], opt: torch.optim.Optimizer, meta: dict
) -> None:
    """Write weights + optimizer tensors and the JSON progress, each through a temporary file and a rename."""
    run_dir.mkdir(parents=True, exist_ok=True)
    opt_tensors, groups = _flatten_optimizer(opt)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in module_state.items()} | opt_tensors
    tmp = run_dir / (CKPT + ".tmp")
    save_file(tensors, str(tmp))
    meta = dict(meta, param_groups=groups)
    tmp_meta = run_dir / (CKPT_META + ".tmp")
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp, run_dir / CKPT)
    os.replace(tmp_meta, run_dir / CKPT_META)


def load_checkpoint(run_dir: Path, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore ``opt`` in place; return (module state, progress meta)."""
    tensors = load_file(str(run_dir / CKPT))
    meta = json.loads((run_dir / CKPT_META).read_text())
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    module = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return module, meta


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CKPT).is_file() and (run_dir / CKPT_META).is_file()
