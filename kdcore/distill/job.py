"""A distillation run from a serialisable :class:`~kdcore.distill.config.RunConfig`: what the CLI ``distill`` and
the app's Distil tab call."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import torch

from kdcore.data.augment import fixed_views
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import TrainData, load_train_data
from kdcore.distill.config import RunConfig
from kdcore.distill.distiller import Distiller
from kdcore.distill.teacher_cache import Views, build_cache
from kdcore.engine.checkpoint import has_checkpoint
from kdcore.engine.dist import dist_env
from kdcore.engine.loop import Supervised, fit
from kdcore.errors import KDCoreError
from kdcore.models import create_model, load_init, load_model


def _check_resume(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume the run in ``out`` with other models, size, init or loss than it was started with."""
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
    model, info = load_init(cfg.init, class_names, cfg.size)
    try:
        student.load_state_dict(model.state_dict())
    except RuntimeError:
        raise KDCoreError(f"--init {cfg.init} is a {info.arch} {info.model_args or ''}, not a {cfg.student}") from None


def _distiller(
    cfg: RunConfig,
    student: torch.nn.Module,
    spec: InputSpec,
    train_data: TrainData,
    data: str,
    stop: threading.Event | None,
    device: str | None,
) -> Generator[dict, None, Distiller | None]:
    """The :class:`Distiller` of ``student`` and ``cfg.teacher``; first the teacher cache when the terms use one.

    Yields the cache's progress events; returns None when ``stop`` ended it.
    """
    dcfg = cfg.distill
    teacher, tinfo = load_model(cfg.teacher, dist_env(device).device)
    if list(tinfo.class_names) != list(train_data.class_names):
        raise KDCoreError(f"teacher classes {tinfo.class_names} differ from the data's {train_data.class_names}")
    cache = None
    needs = dcfg.teacher_needs
    views = cfg.train.views
    if dcfg.teacher_cache and needs & ({"logits", "map", "features"} if views else {"logits", "map"}):
        if cfg.train.mixup > 0:
            raise KDCoreError("mixup needs the teacher at every step (--no-teacher-cache): the cache holds the "
                              "teacher's outputs on un-mixed images")
        method = dcfg.sem_map if "map" in needs else None
        train_t = train_data.train
        if tinfo.spec.size != cfg.size:  # the teacher sees its own resolution
            train_t = load_train_data(data, tinfo.spec.size, train_data.split_path).train
            if not torch.equal(train_t.labels, train_data.train.labels):
                raise KDCoreError(f"{data}: images decode differently at {tinfo.spec.size} and {cfg.size} px")
        # with views, the teacher's outputs on each view training draws
        fixed = Views(fixed_views(len(train_t), views), cfg.train.augment) if views else None
        cache = yield from build_cache(teacher, tinfo.spec, train_t.pixels, train_t.labels, method, dcfg.map_size,
                                       stop=stop, features="features" in needs and fixed is not None, views=fixed)
        if cache is None:
            return None
    return Distiller(student, teacher, spec, tinfo.spec, dcfg, cfg.train.label_smoothing, cache)


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
    labelled = [k for k in ("sem", "dkd") if k in dcfg.weights]
    if cfg.train.mixup > 0 and labelled:
        raise KDCoreError(f"mixup cannot train the {labelled[0]} term: a blended slice has no single target class")
    summary = {"objective": "distillation", "teacher": cfg.teacher, "student": cfg.student,
               "loss": dcfg.describe(), "distill": dcfg.to_dict(), "init": cfg.init}
    if set(dcfg.weights) == {"ce"}:  # the student alone: no teacher at all
        objective = Supervised(student, cfg.train.label_smoothing)
        summary["objective"] = "supervised (student alone)"
    else:
        objective = yield from _distiller(cfg, student, spec, train_data, data, stop, device)
        if objective is None:
            yield {"event": "stopped", "epoch": 0, "step": 0}
            return
    yield from fit(objective, train_data, cfg.train, out, cfg.student, resume=resume, stop=stop, device=device,
                   summary=summary)
