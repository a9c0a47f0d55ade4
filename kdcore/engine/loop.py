"""The training loop shared by teacher training and distillation.

:func:`fit` trains an :class:`Objective` (a module that returns logits and named, weighted loss terms) on
:class:`~kdcore.data.pack.TrainData` and yields progress events, so the CLI draws a progress bar, the app draws live
curves, and either can stop it between steps. Per epoch it writes an atomic checkpoint (``--resume`` continues
from the last whole epoch, bit for bit: every epoch's shuffling and augmentation are drawn from
``seed`` and the epoch number), a line of ``metrics.jsonl``, and the best model as a model folder ``best/``
(the epoch of the highest validation accuracy: a choice made on validation); after the last epoch the final model
also goes to ``last/`` (no choice made on validation).
With ``ema`` > 0 the student's exponential moving average (timm's ``ModelEmaV3``, updated every step, its decay
warmed up as ``1 - (1 + step)^(-2/3)`` until it reaches ``ema``, so that the first weights fade out of a short run)
is what is validated and exported.
The device path: ``amp="bf16"`` runs the forward pass under bfloat16 autocast (``amp="auto"``: where the device
computes bfloat16 natively, see :func:`amp_dtype`), ``compile`` wraps the objective in
``torch.compile``; the per-step sums stay on the device and reach the host at an epoch's first step and every
``log_every`` steps (a ``step`` event between two syncs repeats the last synced loss and accuracy), so the
progress display does not make the host wait for the GPU at every step.
Under ``torchrun`` it runs data-parallel (:mod:`kdcore.engine.dist`): each rank takes its slice of the same global
batch, so the curve matches one process with that batch.

The steps of :func:`fit`: :func:`_setup` (optimizer, EMA, resume, run files), :func:`_train_epoch` (made of
:func:`_train_step`), :func:`_validate`, :func:`_end_epoch` (best model, checkpoint, metrics line).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from kdcore.data.augment import AugmentConfig, augment_batch, fixed_views, mix_batch
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import TensorSet, TrainData
from kdcore.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from kdcore.engine.dist import DistEnv, dist_env
from kdcore.engine.metrics import macro_f1
from kdcore.errors import KDCoreError
from kdcore.models import ModelInfo, save_model
from kdcore.models.predict import predict_logits

#: ``TrainConfig.amp`` -> autocast dtype (``"auto"``: resolved per device by :func:`amp_dtype`)
AMP_DTYPES: dict[str | None, torch.dtype | None] = {None: None, "bf16": torch.bfloat16, "auto": torch.bfloat16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX-BF16
    (elsewhere bf16 is emulated, which can be slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities() if device.type == "cpu" else {}
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.amp`` on ``device``; None = float32. ``"auto"`` is bf16 where
    :func:`native_bf16`, else None."""
    if amp == "auto" and not native_bf16(device):
        return None
    return AMP_DTYPES[amp]


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
    views: int = 0  # each image shown as one of V fixed augmentations (the same for every run); 0 = a fresh one
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: float = InputSpec.mean  # the input normalisation of the trained model
    std: float = InputSpec.std
    amp: str | None = None  # "bf16": the forward pass under bfloat16 autocast; "auto": bf16 if native; None = float32
    compile: bool = False  # torch.compile the objective (minutes of compiling on a CPU)
    log_every: int = 1  # host sync of the step's loss and accuracy every N steps (1: every step)

    def __post_init__(self) -> None:
        if self.amp not in AMP_DTYPES:
            raise KDCoreError(f"amp must be one of {', '.join(map(str, AMP_DTYPES))}, not {self.amp!r}")
        if self.views < 0:
            raise KDCoreError(f"views must be >= 0, not {self.views}")
        if self.views and self.mixup > 0:
            raise KDCoreError("views and mixup do not combine: a view is one fixed image, a mixed batch is not")
        if self.log_every < 1:
            raise KDCoreError(f"log_every must be >= 1, not {self.log_every}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        aug = d.pop("augment", {})
        aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
        return cls(augment=aug, **{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Objective(nn.Module):
    """What :func:`fit` trains. ``student`` is the model that gets exported.

    ``forward(x (B, C, S, S), y (B,) | (B, K), theta (B, 2, 3) | None, index (B,)) -> (logits (B, K), {name: term})``:
    ``y`` are class indices, or soft targets under mixup; ``index`` the batch's rows in the training set (with
    ``TrainConfig.views``: ``image * V + view``); the terms are already weighted; their sum is minimised.
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


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def epoch_order(n: int, seed: int, epoch: int, budget: int | None) -> torch.Tensor:
    """The shuffled training indices of one epoch (a seeded function of seed and epoch only)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)
    return order[:budget] if budget else order


@dataclass
class _Run:
    """What :func:`fit`'s steps share: the models, the optimizer, the data on the device and the progress."""

    objective: Objective
    model: nn.Module  # the objective, in DistributedDataParallel under torchrun
    opt: torch.optim.Optimizer
    ema: ModelEmaV3 | None
    env: DistEnv
    cfg: TrainConfig
    data: TrainData
    train: TensorSet  # ``data.train`` and ``data.val`` on the device
    val: TensorSet
    spec: InputSpec
    amp: torch.dtype | None  # the forward pass's autocast dtype (None: float32)
    run_dir: Path
    arch: str
    run_config: dict  # RUN_DIR/config.json
    views: torch.Tensor | None = None  # (N, V, AUGMENT_PARAMS) fixed augmentations (TrainConfig.views), on the host
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"accuracy": -1.0})
    history: list[dict] = field(default_factory=list)

    @property
    def validated(self) -> nn.Module:
        """What is validated and exported: the student, or its weight average."""
        return self.objective.student if self.ema is None else self.ema.module

    @property
    def budget(self) -> int:
        return min(self.cfg.max_images or len(self.train), len(self.train))

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.budget // self.cfg.batch_size)


@dataclass
class _EpochStats:
    """Sums over one epoch's steps (losses averaged over the ranks)."""

    sums: dict[str, float] = field(default_factory=dict)
    correct: int = 0
    seen: int = 0
    images: int = 0  # global batch images, all ranks
    time_s: float = 0.0


def _optimizer(objective: Objective, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm scales (1-d tensors)."""
    params = [p for p in objective.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _setup(objective: Objective, data: TrainData, cfg: TrainConfig, run_dir: Path, arch: str, resume: bool,
           device: str | None, summary: dict | None) -> _Run:
    """Place the objective, build the optimizer and EMA, restore a checkpoint or refuse to overwrite one."""
    env = dist_env(device)
    torch.manual_seed(cfg.seed)
    spec = InputSpec(size=data.size, channels=1, mean=cfg.mean, std=cfg.std)
    objective.to(env.device, memory_format=torch.channels_last)  # ~15% faster convolutions on CPU (oneDNN)
    opt = _optimizer(objective, cfg)
    ema = ModelEmaV3(objective.student, decay=cfg.ema, use_warmup=True) if cfg.ema > 0 else None
    amp = amp_dtype(cfg.amp, env.device)
    precision = str(amp or torch.float32).removeprefix("torch.")
    run_config = {"arch": arch, "train": cfg.to_dict(), "data": data.data_source, "split": data.split_path,
                  "size": data.size, "world_size": env.world, "autocast": precision} | (summary or {})
    run = _Run(objective=objective, model=objective, opt=opt, ema=ema, env=env, cfg=cfg, data=data,
               train=data.train.to(env.device), val=data.val.to(env.device), spec=spec, amp=amp, run_dir=run_dir,
               arch=arch, run_config=run_config,
               views=fixed_views(len(data.train), cfg.views) if cfg.views else None)
    if resume and has_checkpoint(run_dir):
        _resume(run)
    elif has_checkpoint(run_dir):
        raise KDCoreError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(run_config, indent=1))
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in run.history))
    run.model = env.wrap(objective)
    if cfg.compile:
        run.model = torch.compile(run.model)
    return run


def _resume(run: _Run) -> None:
    """Load the last checkpoint of ``run.run_dir`` (same training config) into the objective, EMA and optimizer."""
    config_file = run.run_dir / "config.json"
    saved = json.loads(config_file.read_text()) if config_file.is_file() else {}
    saved_cfg = TrainConfig.from_dict(saved["train"]).to_dict() if "train" in saved else None
    if json.loads(json.dumps(saved_cfg)) != json.loads(json.dumps(run.cfg.to_dict())):
        raise KDCoreError(f"{run.run_dir}: --resume with a different training config than the saved one")
    state, meta = load_checkpoint(run.run_dir, run.opt)
    missing = run.objective.load_state_dict(state, strict=False).missing_keys
    if run.ema is not None:
        run.ema.module.load_state_dict({k[len("ema."):]: v for k, v in state.items() if k.startswith("ema.")})
    if any(not k.startswith("teacher.") for k in missing):
        raise KDCoreError(f"{run.run_dir}: checkpoint does not fit this model")
    run.start_epoch, run.best, run.history = meta["epoch"] + 1, meta["best"], meta["history"]


def _train_step(
    run: _Run, gidx: torch.Tensor, gen: torch.Generator, lr: float, step: int
) -> tuple[torch.Tensor, list[str], torch.Tensor, int]:
    """Optimizer step ``step`` (counted over the run) at learning rate ``lr`` on this rank's share of the global
    batch ``gidx`` ``(B,)``.

    Returns ``[loss, *terms]`` averaged over the ranks ``(1 + T,)``, the term names, this rank's count of correct
    predictions (a 0-d tensor on the device: no host sync) and of images.
    """
    cfg, env = run.cfg, run.env
    params, rows = None, gidx  # rows: what the objective's ``index`` counts (images, or image views)
    if run.views is not None:
        img, v = gidx.cpu(), torch.randint(cfg.views, (len(gidx),), generator=gen)
        params, rows = run.views[img, v], (img * cfg.views + v).to(gidx.device)
    x, theta = augment_batch(run.train.pixels[gidx], run.spec, cfg.augment, gen, params)
    y = target = run.train.labels[gidx]
    if cfg.mixup > 0:
        x, target = mix_batch(x, y, len(run.data.class_names), cfg.mixup, gen)
    sl = env.shard(len(gidx))
    x, y, target, idx = x[sl], y[sl], target[sl], rows[sl]
    theta = theta[sl] if theta is not None else None
    for g in run.opt.param_groups:
        g["lr"] = lr
    with torch.autocast(env.device.type, dtype=run.amp, enabled=run.amp is not None):
        logits, terms = run.model(x, target, theta, idx)
    loss = sum(terms.values())
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if run.ema is not None:
        run.ema.update(run.objective.student, step=step + 1)  # decay warms up, so short runs average too
    vals = env.mean(torch.stack([loss.detach()] + [t.detach() for t in terms.values()]))
    return vals, list(terms), (logits.argmax(1) == y).sum(), len(y)


def _train_epoch(run: _Run, epoch: int, stop: threading.Event | None) -> Generator[dict, None, _EpochStats | None]:
    """Yield a ``step`` event per step; return the epoch's sums (None after a ``stopped`` event)."""
    cfg, steps = run.cfg, run.steps_per_epoch
    total, warmup = steps * cfg.epochs, int(cfg.warmup_epochs * steps)
    run.objective.train()
    order = epoch_order(len(run.train), cfg.seed, epoch, run.budget).to(run.env.device)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
    torch.manual_seed(cfg.seed * 104_729 + epoch)
    stats = _EpochStats()
    sums, correct = None, torch.zeros((), dtype=torch.long, device=run.env.device)  # on the device until a sync
    shown: dict = {}
    t0 = time.perf_counter()
    for step in range(steps):
        if stop is not None and stop.is_set():
            yield {"event": "stopped", "epoch": epoch, "step": step}
            return None
        gidx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        vals, names, ok, seen = _train_step(run, gidx, gen, lr_at(epoch * steps + step, total, warmup, cfg.lr),
                                            epoch * steps + step)
        sums = vals.double() if sums is None else sums + vals.double()
        correct += ok
        stats.seen, stats.images = stats.seen + seen, stats.images + len(gidx)
        if step == 0 or (step + 1) % cfg.log_every == 0 or step + 1 == steps:  # the host sync
            host = vals.tolist()
            shown = {"loss": host[0], "terms": dict(zip(names, host[1:])),
                     "train_accuracy": int(correct) / stats.seen}
        ips = (step + 1) * len(gidx) / (time.perf_counter() - t0)
        remaining = (cfg.epochs - epoch) * steps - step - 1
        yield {"event": "step", "epoch": epoch, "step": step + 1, "steps": steps, **shown, "images_per_s": ips,
               "eta_s": remaining * len(gidx) / max(ips, 1e-9)}
    stats.sums = dict(zip(["loss", *names], sums.tolist()))
    stats.correct = int(correct)
    stats.time_s = time.perf_counter() - t0
    return stats


def _validate(run: _Run, epoch: int, stats: _EpochStats) -> dict:
    """The epoch's ``metrics.jsonl`` record: training sums and the validated model's accuracy, macro-F1 and loss."""
    run.objective.eval()
    logits = predict_logits(run.validated, run.val.pixels, run.spec)
    pred = logits.argmax(1).cpu().numpy()
    yv = run.val.labels.cpu().numpy()
    steps = run.steps_per_epoch
    return {
        "epoch": epoch, "lr": run.opt.param_groups[0]["lr"],
        **{f"train_{k}": v / steps for k, v in stats.sums.items()},
        "train_accuracy": stats.correct / max(stats.seen, 1),
        "val_accuracy": float((pred == yv).mean()), "val_macro_f1": macro_f1(yv, pred, len(run.data.class_names)),
        "val_loss": float(F.cross_entropy(logits, run.val.labels).item()),
        "images_per_s": steps * run.cfg.batch_size / stats.time_s, "epoch_time_s": stats.time_s,
    }


def _end_epoch(run: _Run, epoch: int, record: dict) -> None:
    """Record the epoch; on rank 0 export an improved model, write the checkpoint and the metrics line."""
    run.history.append(record)
    improved = record["val_accuracy"] > run.best["accuracy"]
    if improved:
        run.best = {"accuracy": record["val_accuracy"], "macro_f1": record["val_macro_f1"], "epoch": epoch}
    if not run.env.main:
        return
    if improved:
        _export(run, "best", run.best)
    state = {k: v for k, v in run.objective.state_dict().items() if not k.startswith("teacher.")}
    if run.ema is not None:
        state |= {f"ema.{k}": v for k, v in run.ema.module.state_dict().items()}
    save_checkpoint(run.run_dir, state, run.opt, {"epoch": epoch, "best": run.best, "history": run.history})
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _export(run: _Run, folder: str, scores: dict) -> None:
    """Save the validated model as the model folder ``folder`` (``best`` or ``last``) of the run, with the run's
    summary in its config; ``scores`` (``{"accuracy", "macro_f1", "epoch"}``) are that epoch's validation scores."""
    cfg, data = run.cfg, run.data
    summary = {
        "val_metrics": {"accuracy": scores["accuracy"], "macro_f1": scores.get("macro_f1")},
        "exported": folder, "epoch": scores.get("epoch"), "best_epoch": run.best.get("epoch"), "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr,
        "seed": cfg.seed, **({"ema": cfg.ema} if cfg.ema else {}),
        "train_images": len(data.train), "val_images": len(data.val),
        "split": Path(data.split_path).name, "train_time_s": round(sum(h["epoch_time_s"] for h in run.history), 1),
        **{k: v for k, v in run.run_config.items() if k in ("objective", "teacher", "loss", "autocast")},
        **({"arch_variant": run.arch} if run.arch != run.validated.pretrained_cfg.get("architecture") else {}),
        **run.objective.extra_summary(),
    }
    save_model(run.validated, run.run_dir / folder, ModelInfo(run.arch, data.class_names, run.spec, summary))


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

    The last event, ``done``, carries ``best_dir`` and ``last_dir`` (the exported model folders) and their
    validation metrics (``best``, ``last``: ``{"accuracy", "macro_f1", "epoch"}``).
    """
    run = _setup(objective, data, cfg, Path(run_dir), arch, resume, device, summary)
    t_run = time.perf_counter()
    images = 0
    for epoch in range(run.start_epoch, cfg.epochs):
        stats = yield from _train_epoch(run, epoch, stop)
        if stats is None:
            return
        images += stats.images
        record = _validate(run, epoch, stats)
        _end_epoch(run, epoch, record)
        yield {"event": "epoch", **record, "best_accuracy": run.best["accuracy"]}
    if run.env.main and not (run.run_dir / "best").exists():
        _export(run, "best", run.best)
    h = run.history[-1]
    last = {"accuracy": h["val_accuracy"], "macro_f1": h["val_macro_f1"], "epoch": h["epoch"]}
    if run.env.main and not (run.run_dir / "last").exists():
        _export(run, "last", last)
    yield {"event": "done", "best_dir": str(run.run_dir / "best"), "last_dir": str(run.run_dir / "last"),
           "best": run.best, "last": last,
           "train_time_s": sum(h["epoch_time_s"] for h in run.history), "history": run.history,
           "wall_time_s": time.perf_counter() - t_run, "images": images}


def run_to_end(events: Iterator[dict]) -> dict:
    """Drain ``fit``'s events (no display) and return the final one."""
    last: dict = {}
    for event in events:
        last = event
    return last


def with_overrides(cfg: TrainConfig, **kw) -> TrainConfig:
    """``cfg`` with the keyword fields that are not None replaced."""
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
