"""A distillation run from a serialisable :class:`RunConfig`: what the CLI ``distill`` and the app's Distil tab call.

Config precedence: defaults < preset (:data:`PRESETS`) < config file < explicit overrides. A run folder's
``config.json`` is itself a valid config file, so any run can be repeated with ``--config RUN_DIR/config.json``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from kdcore.distill.distiller import DistillConfig, Distiller
from kdcore.distill.teacher_cache import build_cache
from kdcore.errors import KDCoreError
from kdcore.data.imageio import InputSpec
from kdcore.engine.loop import Supervised, TrainConfig, dist_env, fit

#: Named starting points. ``short``: a small student at 64 px on a subset, <= 5 min on 2 CPU cores; no augmentation
#: (10 short epochs do not over-fit, and the cached clean-view teacher logits then match the input exactly).
PRESETS: dict[str, dict] = {
    "short": {
        "student": "mobilenetv2_035",
        "size": 64,
        "train": {"epochs": 10, "batch_size": 64, "lr": 4e-3, "max_images": 3072, "warmup_epochs": 0.5,
                  "augment": {"enabled": False}},
        "distill": {"loss": {"ce": 1.0, "kd": 1.0}, "temperature": 4.0},
    },
}


@dataclass
class RunConfig:
    """Everything a distillation run depends on besides the data folder; saved in ``RUN_DIR/config.json``."""

    teacher: str = "teacher"
    student: str = "mobilenetv2_035"
    size: int = 128
    init: str | None = None  # a model folder of ``student``'s architecture to start from (else a random init)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        return {"teacher": self.teacher, "student": self.student, "size": self.size, "init": self.init,
                "train": self.train.to_dict(), "distill": self.distill.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        base = cls()
        return cls(
            teacher=d.get("teacher", base.teacher), student=d.get("student", base.student),
            size=int(d.get("size", base.size)), init=d.get("init"), train=TrainConfig.from_dict(d.get("train", {})),
            distill=DistillConfig.from_dict(d.get("distill", {})),
        )


def _merge(base: dict, over: dict) -> dict:
    """Recursive dict update; the ``loss`` dict is replaced as a whole (a term left out is off)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "loss" else v
    return out


def make_config(preset: str | None = None, file: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Defaults, then ``PRESETS[preset]``, then the JSON ``file``, then ``overrides`` (same nested layout)."""
    d = RunConfig().to_dict()
    if preset is not None:
        if preset not in PRESETS:
            raise KDCoreError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
        d = _merge(d, PRESETS[preset])
    if file is not None:
        try:
            d = _merge(d, json.loads(Path(file).read_text()))
        except (OSError, ValueError) as e:
            raise KDCoreError(f"{file}: unreadable config ({e})") from None
    return RunConfig.from_dict(_merge(d, overrides or {}))


def parse_loss(text: str) -> dict[str, float]:
    """``"ce=1,kd=0.5"`` -> ``{"ce": 1.0, "kd": 0.5}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise KDCoreError(f"--loss: {part!r} is not NAME=WEIGHT") from None
    return out


def _check_resume(cfg: RunConfig, out: Path) -> None:
    saved_file = out / "config.json"
    if not saved_file.is_file():
        return
    saved = RunConfig.from_dict(json.loads(saved_file.read_text())).to_dict()
    now = cfg.to_dict()
    diff = [k for k in ("teacher", "student", "size", "init", "distill") if saved[k] != now[k]]
    if diff:
        raise KDCoreError(f"{out}: --resume with a different {', '.join(diff)} than the saved run")


def _init_student(student: torch.nn.Module, cfg: RunConfig, class_names: list[str]) -> None:
    """Load the weights of the model folder ``cfg.init`` into ``student`` (same architecture, classes and size)."""
    from kdcore.models import load_init

    model, info = load_init(cfg.init, class_names, cfg.size)
    try:
        student.load_state_dict(model.state_dict())
    except RuntimeError:
        raise KDCoreError(f"--init {cfg.init} is a {info.arch} {info.model_args or ''}, not a {cfg.student}") from None


def run(
    cfg: RunConfig,
    data: str,
    out: str | Path,
    resume: bool = False,
    stop: threading.Event | None = None,
    device: str | None = None,
    split: str | Path | None = None,
) -> Iterator[dict]:
    """Distil ``cfg.teacher`` into a new ``cfg.student`` on ``data``; yield progress events as ``fit`` does.

    Events: ``{"event": "cache", "done", "total", "cached"}`` while the teacher cache is built (skipped when it is
    on disk already), then ``fit``'s ``step`` / ``epoch`` / ``done`` (or ``stopped``). Setting ``stop`` ends the
    run at the next step; ``resume=True`` continues it from its last whole epoch.
    """
    from kdcore.engine.checkpoint import has_checkpoint
    from kdcore.data.pack import load_train_data
    from kdcore.models import create_model, load_model

    out = Path(out)
    if resume and has_checkpoint(out):
        _check_resume(cfg, out)
    dcfg = cfg.distill
    train_data = load_train_data(data, cfg.size, split)
    spec = InputSpec(cfg.size, 1, cfg.train.mean, cfg.train.std)
    torch.manual_seed(cfg.train.seed)  # the same initial student for every loss configuration of a seed
    student = create_model(cfg.student, len(train_data.class_names), spec)
    if cfg.init is not None:
        _init_student(student, cfg, train_data.class_names)
    if cfg.train.mixup > 0 and "sem" in dcfg.weights:
        raise KDCoreError("mixup cannot train the sem term: a blended slice has no single target class to explain")
    summary = {"objective": "distillation", "teacher": cfg.teacher, "student": cfg.student,
               "loss": dcfg.describe(), "distill": dcfg.to_dict(), "init": cfg.init}
    if set(dcfg.weights) == {"ce"}:  # the student alone: no teacher at all
        objective = Supervised(student, cfg.train.label_smoothing)
        summary["objective"] = "supervised (student alone)"
    else:
        teacher, tinfo = load_model(cfg.teacher, dist_env(device).device)
        if list(tinfo.class_names) != list(train_data.class_names):
            raise KDCoreError(f"teacher classes {tinfo.class_names} differ from the data's {train_data.class_names}")
        cache = None
        needs = dcfg.teacher_needs
        if dcfg.teacher_cache and needs & {"logits", "map"}:
            if cfg.train.mixup > 0:
                raise KDCoreError("mixup needs the teacher at every step (--no-teacher-cache): the cache holds the "
                                  "teacher's outputs on un-mixed images")
            train_t = train_data.train
            if tinfo.spec.size != cfg.size:  # the teacher sees its own resolution
                train_t = load_train_data(data, tinfo.spec.size, train_data.split_path).train
                if not torch.equal(train_t.labels, train_data.train.labels):
                    raise KDCoreError(f"{data}: images decode differently at {tinfo.spec.size} and {cfg.size} px")
            method = dcfg.sem_map if "map" in needs else None
            cache = yield from build_cache(teacher, tinfo.spec, train_t.pixels, train_t.labels, method,
                                           dcfg.map_size, stop=stop)
            if cache is None:
                yield {"event": "stopped", "epoch": 0, "step": 0}
                return
        objective = Distiller(student, teacher, spec, tinfo.spec, dcfg, cfg.train.label_smoothing, cache)
    yield from fit(objective, train_data, cfg.train, out, cfg.student, resume=resume, stop=stop, device=device,
                   summary=summary)
