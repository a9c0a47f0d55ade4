"""The training loop shared by teacher training and distillation.

:func:`fit` trains an :class:`Objective` (a module that returns logits and named, weighted loss terms) on
:class:`~kdcore.data.pack.TrainData` and yields progress events, so the CLI draws a progress bar, the app draws live
curves, and either can stop it between steps. Per epoch it writes an atomic checkpoint (``--resume`` continues
from the last whole epoch, bit for bit: every epoch's shuffling and augmentation are drawn from
``seed`` and the epoch number), a line of ``metrics.jsonl``, and the best model as a model folder ``best/``.
With ``ema`` > 0 the student's exponential moving average (timm's ``ModelEmaV3``, updated every step) is what is
validated and exported.
Under ``torchrun`` it runs data-parallel (DistributedDataParallel; gloo on CPU, nccl on CUDA): each rank takes
its slice of the same global batch, so the curve matches one process with that batch.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from kdcore.data.augment import AugmentConfig, augment_batch, mix_batch, to_input
from kdcore.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from kdcore.data.pack import TensorSet, TrainData
from kdcore.errors import KDCoreError
from kdcore.data.imageio import InputSpec
from kdcore.engine.metrics import macro_f1
from kdcore.models import ModelInfo, save_model


@dataclass
class TrainConfig:
    """Everything that decides a run's result; saved as ``RUN_DIR/config.json``."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    max_images: int | None = None  # image budget per epoch (a seeded subset of the training split)
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 = off (then the objective gets hard labels)
    ema: float = 0.0  # per-step decay of the student's weight average that is validated and exported; 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: float = InputSpec.mean  # the input normalisation of the trained model
    std: float = InputSpec.std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        aug = d.pop("augment", {})
        aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
        return cls(augment=aug, **{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Objective(nn.Module):
    """What :func:`fit` trains. ``student`` is the model that gets exported.

    ``forward(x (B, C, S, S), y (B,) | (B, K), theta (B, 2, 3) | None, index (B,)) -> (logits (B, K), {name: term})``:
    ``y`` are class indices, or soft targets under mixup; the terms are already weighted; their sum is minimised.
    """

    student: nn.Module

    def extra_summary(self) -> dict:
        return {}


class Supervised(Objective):
    """Cross-entropy with label smoothing: plain training of one model (teachers, students trained alone)."""

    def __init__(self, student: nn.Module, label_smoothing: float = 0.1):
        super().__init__()
        self.student = student
        self.label_smoothing = label_smoothing

    def forward(self, x, y, theta=None, index=None):
        logits = self.student(x)
        return logits, {"ce": F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)}


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_env(device: str | None = None) -> DistEnv:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest convolutions
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return DistEnv(dist.get_rank(), world, dev)
    return DistEnv(0, 1, dev)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def predict_logits(model: nn.Module, pixels: torch.Tensor, spec: InputSpec, batch: int = 256) -> torch.Tensor:
    """Logits ``(N, K)`` of an eval-mode model on uint8 ``(N, S, S)`` (float32, on the model's device)."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = [model(to_input(pixels[i : i + batch].to(dev), spec)).float() for i in range(0, len(pixels), batch)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def epoch_order(n: int, seed: int, epoch: int, budget: int | None) -> torch.Tensor:
    """The shuffled training indices of one epoch (a seeded function of seed and epoch only)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)
    return order[:budget] if budget else order


def fit(
    objective: Objective,
    data: TrainData,
    cfg: TrainConfig,
    run_dir: str | Path,
    arch: str,
    resume: bool = False,
    stop: threading.Event | None = None,
    device: str | None = None,
    summary: dict | None = None,
) -> Iterator[dict]:
    """Train ``objective`` and yield events: ``{"event": "step"|"epoch"|"done"|"stopped", ...}``.

    The last event, ``done``, carries ``best_dir`` (the exported model folder) and the best validation metrics.
    """
    run_dir = Path(run_dir)
    env = dist_env(device)
    torch.manual_seed(cfg.seed)
    spec = InputSpec(size=data.size, channels=1, mean=cfg.mean, std=cfg.std)
    objective.to(env.device, memory_format=torch.channels_last)  # ~15% faster convolutions on CPU (oneDNN)
    params = [p for p in objective.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    ema = ModelEmaV3(objective.student, decay=cfg.ema) if cfg.ema > 0 else None
    validated = objective.student if ema is None else ema.module  # what is validated and exported
    start_epoch, best, history = 0, {"accuracy": -1.0}, []
    config_file = run_dir / "config.json"
    run_config = {"arch": arch, "train": cfg.to_dict(), "data": data.data_source, "split": data.split_path,
                  "size": data.size, "world_size": env.world} | (summary or {})
    if resume and has_checkpoint(run_dir):
        saved = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if saved.get("train") != json.loads(json.dumps(cfg.to_dict())):
            raise KDCoreError(f"{run_dir}: --resume with a different training config than the saved one")
        state, meta = load_checkpoint(run_dir, opt)
        missing = objective.load_state_dict(state, strict=False).missing_keys
        if ema is not None:
            ema.module.load_state_dict({k[len("ema."):]: v for k, v in state.items() if k.startswith("ema.")})
        if any(not k.startswith("teacher.") for k in missing):
            raise KDCoreError(f"{run_dir}: checkpoint does not fit this model")
        start_epoch, best, history = meta["epoch"] + 1, meta["best"], meta["history"]
    elif has_checkpoint(run_dir) and not resume:
        raise KDCoreError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(run_config, indent=1))
        metrics_log = run_dir / "metrics.jsonl"
        metrics_log.write_text("".join(json.dumps(h) + "\n" for h in history))
    model = objective
    if env.world > 1:
        model = nn.parallel.DistributedDataParallel(objective, device_ids=[env.device] if env.device.type == "cuda" else None)
    train = data.train.to(env.device)
    val = data.val.to(env.device)
    budget = min(cfg.max_images or len(train), len(train))
    steps_per_epoch = max(1, budget // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    t_run = time.perf_counter()
    images_done = 0
    for epoch in range(start_epoch, cfg.epochs):
        objective.train()
        order = epoch_order(len(train), cfg.seed, epoch, budget).to(env.device)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        torch.manual_seed(cfg.seed * 104_729 + epoch)
        sums: dict[str, float] = {}
        correct = seen = 0
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                yield {"event": "stopped", "epoch": epoch, "step": step}
                return
            gidx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, theta = augment_batch(train.pixels[gidx], spec, cfg.augment, gen)
            y = target = train.labels[gidx]
            if cfg.mixup > 0:
                x, target = mix_batch(x, y, len(data.class_names), cfg.mixup, gen)
            share = len(gidx) // env.world
            sl = slice(env.rank * share, (env.rank + 1) * share)
            x, y, target, idx = x[sl], y[sl], target[sl], gidx[sl]
            theta = theta[sl] if theta is not None else None
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + step, total, warmup, cfg.lr)
            logits, terms = model(x, target, theta, idx)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(objective.student)
            vals = torch.stack([loss.detach()] + [t.detach() for t in terms.values()])
            if env.world > 1:
                dist.all_reduce(vals)
                vals /= env.world
            for name, v in zip(["loss", *terms], vals.tolist()):
                sums[name] = sums.get(name, 0.0) + v
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            images_done += len(gidx)
            elapsed = time.perf_counter() - t0
            ips = (step + 1) * len(gidx) / elapsed
            remaining = (cfg.epochs - epoch) * steps_per_epoch - step - 1
            yield {"event": "step", "epoch": epoch, "step": step + 1, "steps": steps_per_epoch,
                   "loss": vals[0].item(), "terms": dict(zip(terms, vals[1:].tolist())),
                   "train_accuracy": correct / seen, "images_per_s": ips,
                   "eta_s": remaining * len(gidx) / max(ips, 1e-9)}
        train_time = time.perf_counter() - t0
        objective.eval()
        logits = predict_logits(validated, val.pixels, spec)
        pred = logits.argmax(1).cpu().numpy()
        yv = val.labels.cpu().numpy()
        record = {
            "epoch": epoch, "lr": opt.param_groups[0]["lr"],
            **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
            "train_accuracy": correct / max(seen, 1),
            "val_accuracy": float((pred == yv).mean()), "val_macro_f1": macro_f1(yv, pred, len(data.class_names)),
            "val_loss": float(F.cross_entropy(logits, val.labels).item()),
            "images_per_s": steps_per_epoch * cfg.batch_size / train_time, "epoch_time_s": train_time,
        }
        history.append(record)
        improved = record["val_accuracy"] > best["accuracy"]
        if improved:
            best = {"accuracy": record["val_accuracy"], "macro_f1": record["val_macro_f1"], "epoch": epoch}
        if env.main:
            if improved:
                _export(objective, validated, run_dir / "best", arch, data, spec, cfg, best, history, run_config)
            state = {k: v for k, v in objective.state_dict().items() if not k.startswith("teacher.")}
            if ema is not None:
                state |= {f"ema.{k}": v for k, v in ema.module.state_dict().items()}
            save_checkpoint(run_dir, state, opt, {"epoch": epoch, "best": best, "history": history})
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        yield {"event": "epoch", **record, "best_accuracy": best["accuracy"]}
    if env.main and not (run_dir / "best").exists():
        _export(objective, validated, run_dir / "best", arch, data, spec, cfg, best, history, run_config)
    yield {"event": "done", "best_dir": str(run_dir / "best"), "best": best,
           "train_time_s": sum(h["epoch_time_s"] for h in history), "history": history,
           "wall_time_s": time.perf_counter() - t_run, "images": images_done}


def _export(objective: Objective, student: nn.Module, folder: Path, arch: str, data: TrainData, spec: InputSpec,
            cfg: TrainConfig, best: dict, history: list[dict], run_config: dict) -> None:
    summary = {
        "val_metrics": {"accuracy": best["accuracy"], "macro_f1": best.get("macro_f1")},
        "best_epoch": best.get("epoch"), "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "seed": cfg.seed, **({"ema": cfg.ema} if cfg.ema else {}),
        "train_images": len(data.train), "val_images": len(data.val),
        "split": Path(data.split_path).name, "train_time_s": round(sum(h["epoch_time_s"] for h in history), 1),
        **{k: v for k, v in run_config.items() if k in ("objective", "teacher", "loss")},
        **objective.extra_summary(),
    }
    save_model(student, folder, ModelInfo(arch, data.class_names, spec, summary))


def run_to_end(events: Iterator[dict]) -> dict:
    """Drain ``fit``'s events (no display) and return the final one."""
    last: dict = {}
    for last in events:
        pass
    return last


def with_overrides(cfg: TrainConfig, **kw) -> TrainConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
