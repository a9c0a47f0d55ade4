"""The whole pipeline in one resumable run: a data folder in, a trained teacher and student, evaluated and
calibrated, out. ``kdcore reproduce`` draws its events; the presets are
:data:`kdcore.distill.config.REPRODUCE_PRESETS`.

Stages, in order: ``teacher`` (:func:`~kdcore.engine.loop.fit` of the preset's teacher), ``rank`` (only with
``rank=True``: the default training-free proxy over the preset's candidates, reported in ``rank.json``; the
student stays the preset's), ``student`` (:func:`kdcore.distill.run` from the new teacher), ``evaluate`` (both
models on the split's validation part), ``calibrate`` (temperature and OOD check written into both model folders).
``OUT`` then holds
``teacher/`` and ``student/`` (run folders; the models, with their cards, are ``teacher/best`` and ``student/best``),
``configs/`` (each training's config file), ``rank.json``, ``eval/``, ``calibration/``, ``reproduce.json`` (the
preset and each finished stage), ``summary.json`` + ``summary.md`` (metrics and the time per stage) and
``commands.sh`` (the same pipeline as individual ``kdcore`` commands).

Resumable at every stage: with ``resume=True`` a finished stage (recorded in ``reproduce.json``) is skipped and a
half-finished training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from kdcore.data.imageio import InputSpec
from kdcore.data.pack import TrainData, load_train_data
from kdcore.distill import make_config, run
from kdcore.distill.config import REPRODUCE_PRESETS
from kdcore.engine.calibrate import calibrate_model
from kdcore.engine.dist import default_device
from kdcore.engine.evaluate import evaluate
from kdcore.engine.loop import Supervised, TrainConfig, fit
from kdcore.errors import KDCoreError
from kdcore.models import create_model, load_model
from kdcore.rank.proxies import rank_for_teacher

STATE_FILE = "reproduce.json"
MODELS = ("teacher", "student")
#: how much a forward-only image counts against a training image in the progress weights
_FORWARD_SHARE = 1 / 3

#: a stage: yields its own events with ``fraction`` (0-1 of the stage); returns its result, None when stopped
StageFn = Callable[["_Context"], Generator[dict, None, dict | None]]


@dataclass
class _Context:
    """What the stages share."""

    data: str
    out: Path
    preset: dict
    teacher_data: TrainData  # the split resolved, at the teacher's size
    resume: bool
    rank: bool  # the rank stage is part of the run
    stop: threading.Event | None
    device: str | None

    @property
    def split(self) -> str:
        return self.teacher_data.split_path

    def model_dir(self, name: str) -> Path:
        return self.out / name / "best"

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()


def reproduce_preset(name: str) -> dict:
    """:data:`REPRODUCE_PRESETS` entry ``name``, or one clear line."""
    if name not in REPRODUCE_PRESETS:
        raise KDCoreError(f"unknown preset {name!r}: choose from {', '.join(REPRODUCE_PRESETS)}")
    return REPRODUCE_PRESETS[name]


def _follow_fit(events: Iterator[dict], epochs: int) -> Generator[dict, None, dict | None]:
    """Pass ``fit``'s events on with the stage's ``fraction``; return the ``done`` event's results."""
    for e in events:
        if e["event"] == "done":
            return {"best_dir": e["best_dir"], "best": e["best"], "train_time_s": round(e["train_time_s"], 1)}
        if e["event"] == "stopped":
            return None
        if e["event"] == "step":
            fraction = (e["epoch"] + e["step"] / e["steps"]) / epochs
        else:
            fraction = (e["epoch"] + 1) / epochs if e["event"] == "epoch" else 0.0
        yield e | {"fraction": fraction}
    return None


def _teacher(ctx: _Context) -> Generator[dict, None, dict | None]:
    t = ctx.preset["teacher"]
    cfg = TrainConfig.from_dict(t["train"])
    d = ctx.teacher_data
    model = create_model(t["arch"], len(d.class_names), InputSpec(t["size"], 1, cfg.mean, cfg.std))
    summary = {"objective": "supervised (teacher)", "train_command": _commands(ctx)[0]}
    return (yield from _follow_fit(fit(Supervised(model, cfg.label_smoothing), d, cfg, ctx.out / "teacher",
                                       t["arch"], resume=ctx.resume, stop=ctx.stop, device=ctx.device,
                                       summary=summary), cfg.epochs))


def _student(ctx: _Context) -> Generator[dict, None, dict | None]:
    cfg = make_config(overrides=_student_config(ctx))
    events = run(cfg, ctx.data, ctx.out / "student", resume=ctx.resume, stop=ctx.stop, device=ctx.device,
                 split=ctx.split)
    return (yield from _follow_fit(events, cfg.train.epochs))


def _rank(ctx: _Context) -> Generator[dict, None, dict | None]:
    r = ctx.preset["rank"]
    teacher, info = load_model(str(ctx.model_dir("teacher")))
    rows = rank_for_teacher(teacher, info.spec, info.class_names, ctx.data, r["candidates"],
                            batch_size=r["batch_size"], split=ctx.split)
    _write(ctx.out / "rank.json", rows)
    yield {"event": "ranked", "fraction": 1.0}
    return {"ranking": [row["name"] for row in rows]}


def _evaluate(ctx: _Context) -> Generator[dict, None, dict | None]:
    keys = ("accuracy", "macro_f1", "roc_auc", "ece", "nll", "num_images", "params", "flops", "latency_ms_batch1")
    out = {}
    for i, name in enumerate(MODELS):
        if ctx.stopped():
            return None
        r = evaluate(str(ctx.model_dir(name)), ctx.data, split=ctx.split, side="val")
        _write(ctx.out / "eval" / f"{name}.json", r)
        out[name] = {k: r[k] for k in keys}
        yield {"event": "evaluated", "model": name, "fraction": (i + 1) / len(MODELS)}
    return out


def _calibrate(ctx: _Context) -> Generator[dict, None, dict | None]:
    out = {}
    for i, name in enumerate(MODELS):
        if ctx.stopped():
            return None
        fitted = calibrate_model(str(ctx.model_dir(name)), ctx.data, ctx.split)
        _write(ctx.out / "calibration" / f"{name}.json", fitted)
        c, o = fitted["calibration"], fitted["ood"]
        out[name] = {"temperature": c["temperature"], "ece_before": c["ece_before"], "ece_after": c["ece_after"],
                     "ood_score": o["score"], "ood_auroc": o["auroc"]}
        yield {"event": "calibrated", "model": name, "fraction": (i + 1) / len(MODELS)}
    return out


STAGES: dict[str, StageFn] = {"teacher": _teacher, "rank": _rank, "student": _student, "evaluate": _evaluate,
                              "calibrate": _calibrate}


def _student_config(ctx: _Context) -> dict:
    """The student's :class:`~kdcore.distill.config.RunConfig` dict: the preset's, from the reproduced teacher."""
    return ctx.preset["student"] | {"teacher": str(ctx.model_dir("teacher"))}


def _weights(preset: dict, n_train: int, n_val: int, rank: bool) -> dict[str, float]:
    """Each stage's share of the progress bar: the images it processes (forward-only ones count a third)."""
    def trained(train: dict) -> int:
        cfg = TrainConfig.from_dict(train)
        return cfg.epochs * min(cfg.max_images or n_train, n_train)

    r = preset["rank"]
    w = {"teacher": trained(preset["teacher"]["train"])}
    if rank:
        w["rank"] = len(r["candidates"]) * r["batch_size"]
    w["student"] = trained(preset["student"]["train"])
    w["evaluate"] = len(MODELS) * n_val * _FORWARD_SHARE
    w["calibrate"] = len(MODELS) * (n_train + 2 * n_val) * _FORWARD_SHARE
    return w


def _commands(ctx: _Context) -> list[str]:
    """The pipeline as individual ``python -m kdcore`` commands, in stage order (rank only when it is run)."""
    q = shlex.quote
    out, t = ctx.out, ctx.preset["teacher"]
    common = f"--data {q(ctx.data)} --split {q(ctx.split)}"
    device = f" --device {q(ctx.device)}" if ctx.device else ""
    cmds = [f"python -m kdcore train-teacher --arch {t['arch']} --size {t['size']} {common} "
            f"--config {q(str(out / 'configs' / 'teacher.json'))} --out {q(str(out / 'teacher'))}{device}"]
    if ctx.rank:
        r = ctx.preset["rank"]
        cmds.append(f"python -m kdcore rank --teacher {q(str(ctx.model_dir('teacher')))} {common} "
                    f"--candidates {','.join(r['candidates'])} --batch-size {r['batch_size']} "
                    f"--json {q(str(out / 'rank.json'))}")
    cmds.append(f"python -m kdcore distill --config {q(str(out / 'configs' / 'student.json'))} {common} "
                f"--out {q(str(out / 'student'))}{device}")
    for verb, folder in (("evaluate", "eval"), ("calibrate", "calibration")):
        cmds += [f"python -m kdcore {verb} --model {q(str(ctx.model_dir(m)))} {common} "
                 f"--json {q(str(out / folder / f'{m}.json'))}" for m in MODELS]
    return cmds


def _write(path: Path, obj: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _start(ctx: _Context, name: str) -> dict:
    """The run's state (``reproduce.json``): a new one, or the saved one when resuming the same preset."""
    path = ctx.out / STATE_FILE
    if path.is_file():
        if not ctx.resume:
            raise KDCoreError(f"{ctx.out} already holds a reproduction: pass --resume to continue it or choose "
                              "another --out")
        state = json.loads(path.read_text())
        if state["preset"] != json.loads(json.dumps(ctx.preset)):
            raise KDCoreError(f"{ctx.out}: --resume with another preset than the saved {state['preset_name']!r}")
        ctx.rank = state["rank"] = state["rank"] or ctx.rank
    else:
        state = {"preset_name": name, "preset": ctx.preset, "data": ctx.data, "split": ctx.split, "rank": ctx.rank,
                 "stages": {}}
    _write(path, state)
    _write(ctx.out / "configs" / "teacher.json",
           {k: ctx.preset["teacher"][k] for k in ("arch", "size")}
           | {"train": TrainConfig.from_dict(ctx.preset["teacher"]["train"]).to_dict()})
    _write(ctx.out / "configs" / "student.json", make_config(overrides=_student_config(ctx)).to_dict())
    (ctx.out / "commands.sh").write_text("#!/bin/sh\n# the reproduction as individual kdcore commands\nset -e\n"
                                         + "".join(c + "\n" for c in _commands(ctx)))
    return state


def _device_name(device: str | None) -> str:
    if (device or default_device()).startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


def _final_epoch(run_dir: Path) -> dict:
    """The final epoch's validation accuracy and macro-F1, the number of epochs and each epoch's training seconds,
    from ``metrics.jsonl``."""
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"final_accuracy": history[-1]["val_accuracy"], "final_macro_f1": history[-1]["val_macro_f1"],
            "epochs": len(history), "epoch_time_s": [h["epoch_time_s"] for h in history]}


def _summary(ctx: _Context, state: dict) -> dict:
    """``summary.json`` and ``summary.md``: the time per stage and both models' validation metrics."""
    stages = state["stages"]
    summary = {"preset": state["preset_name"], "data": ctx.data, "split": ctx.split,
               "device": _device_name(ctx.device),
               "time_s": {k: v["time_s"] for k, v in stages.items()},
               "total_time_s": round(sum(v["time_s"] for v in stages.values()), 1),
               "models": {m: {"folder": str(ctx.model_dir(m)), **stages["evaluate"]["result"][m],
                              **stages["calibrate"]["result"][m],
                              "train_time_s": stages[m]["result"]["train_time_s"],
                              "best_epoch": stages[m]["result"]["best"]["epoch"],
                              **_final_epoch(ctx.model_dir(m).parent)} for m in MODELS}}
    if "rank" in stages:
        summary["ranking"] = stages["rank"]["result"]["ranking"]
    _write(ctx.out / "summary.json", summary)
    lines = [f"# Reproduction, preset `{summary['preset']}`", "",
             f"Data `{ctx.data}`, split `{Path(ctx.split).name}` (validation part), device {summary['device']}.", "",
             "| stage | time |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} min |" for k, v in summary["time_s"].items()]
    lines += [f"| total | {summary['total_time_s'] / 60:.1f} min |", "",
              "| model | params | val accuracy, final epoch | val accuracy, exported (best) epoch | macro-F1, exported "
              "| ECE at T=1 -> fitted T | temperature | exported epoch |",
              "|---|---|---|---|---|---|---|---|"]
    for m, r in summary["models"].items():
        lines.append(f"| {m} | {r['params']:,} | {r['final_accuracy']:.4f} | {r['accuracy']:.4f} | "
                     f"{r['macro_f1']:.4f} | {r['ece_before']:.4f} -> {r['ece_after']:.4f} | {r['temperature']:.3f} | "
                     f"{r['best_epoch'] + 1} of {r['epochs']} |")
    lines += ["", "The exported model is each run's best epoch on these validation images (a choice made on them, so "
              "its score is optimistic); the final epoch's score involves no such choice."]
    (ctx.out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def reproduce(
    data: str,
    out: str | Path,
    preset: str = "cpu",
    resume: bool = False,
    rank: bool = False,
    split: str | Path | None = None,
    device: str | None = None,
    stop: threading.Event | None = None,
) -> Iterator[dict]:
    """Run the pipeline on ``data`` into ``out``; yield progress events.

    Every event carries ``done`` and ``total`` (progress in weighted images, :func:`_weights`). Events:
    ``{"event": "stage", "stage", "status": "start"|"skipped"|"done", "time_s"}``; the running stage's own events
    with ``stage`` added (``fit``'s ``step`` / ``epoch``, the teacher cache's ``cache``, ``ranked``, ``evaluated``,
    ``calibrated``); ``stopped`` (``stop`` was set: at the next step, or between stages); last ``done`` with the
    ``summary``. Without ``split``: the dataset's default split (the bundled one for the reference dataset).
    """
    p = reproduce_preset(preset)
    ctx = _Context(str(data), Path(out).resolve(), p, load_train_data(str(data), p["teacher"]["size"], split),
                   resume, rank, stop, device)
    state = _start(ctx, preset)
    weights = _weights(p, len(ctx.teacher_data.train), len(ctx.teacher_data.val), ctx.rank)
    total, done = sum(weights.values()), 0.0
    for name, weight in weights.items():
        if name in state["stages"]:
            done += weight
            yield {"event": "stage", "stage": name, "status": "skipped", "done": done, "total": total}
            continue
        if ctx.stopped():
            yield {"event": "stopped", "stage": name, "done": done, "total": total}
            return
        yield {"event": "stage", "stage": name, "status": "start", "done": done, "total": total}
        t0 = time.perf_counter()
        stage = STAGES[name](ctx)
        try:
            while True:
                e = next(stage)
                fraction = e.pop("fraction")
                yield e | {"stage": name, "done": done + weight * fraction, "total": total}
        except StopIteration as end:
            result = end.value
        if result is None:
            yield {"event": "stopped", "stage": name, "done": done, "total": total}
            return
        done += weight
        state["stages"][name] = {"time_s": round(time.perf_counter() - t0, 1), "result": result}
        _write(ctx.out / STATE_FILE, state)
        yield {"event": "stage", "stage": name, "status": "done", "time_s": state["stages"][name]["time_s"],
               "done": done, "total": total}
    yield {"event": "done", "summary": _summary(ctx, state), "out": str(ctx.out), "done": total, "total": total}
