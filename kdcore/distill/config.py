"""A distillation run's configuration and every default of it: :class:`DistillConfig`, :class:`RunConfig`,
:data:`PRESETS`, :data:`REPRODUCE_PRESETS`, and the ways to build one (:func:`make_config`,
:func:`config_from_options`, :func:`parse_loss`).

Config precedence: defaults < preset (:data:`PRESETS`) < config file < explicit overrides. A run folder's
``config.json`` is itself a valid config file, so any run can be repeated with ``--config RUN_DIR/config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdcore.distill.losses import FEAT_DISTANCES, LOSSES
from kdcore.engine.loop import TrainConfig
from kdcore.errors import KDCoreError
from kdcore.explain import PAIRED_MAPS, map_rule

#: the explanation maps the ``sem`` term can compare (each made by one rule on both sides)
SEM_MAPS = PAIRED_MAPS

#: Named starting points. ``short`` (the app's Distill default): the bundled student's architecture at 80 px, 60
#: epochs with the MRI augmentation and a warmed-up weight average, ``ce + kd`` from the cached teacher logits, under
#: bf16 autocast where the device computes bf16 natively (``amp="auto"``); docs/distill.md, "Presets and the short
#: run", gives its time on 2 CPU cores, measured by ``bench.short_preset``.
PRESETS: dict[str, dict] = {
    "short": {
        "student": "resnet10t_w20",
        "size": 80,
        "train": {"epochs": 60, "batch_size": 64, "lr": 4e-3, "warmup_epochs": 6.0, "ema": 0.998, "amp": "auto"},
        "distill": {"loss": {"ce": 1.0, "kd": 1.0}, "temperature": 4.0},
    },
}

#: The full recipe of the shipped models (teacher: ``train-teacher --arch resnet18 --epochs 120 --batch-size 128
#: --lr 4e-3 --seed 1``; student: ``distill --student resnet10t_w20 --loss ce=1,kd=1 --no-teacher-cache --epochs 120
#: --batch-size 64 --lr 3e-3 --seed 1``), both at 128 px with the default MRI augmentation and label smoothing 0.1.
_FULL_TEACHER = {"epochs": 120, "batch_size": 128, "lr": 4e-3, "seed": 1}
_FULL_STUDENT = {"epochs": 120, "batch_size": 64, "lr": 3e-3, "seed": 1}
_DEVICE = {"amp": "bf16", "compile": True, "log_every": 50}
_KD = {"loss": {"ce": 1.0, "kd": 1.0}, "temperature": 4.0}

#: Presets of ``kdcore reproduce`` (:mod:`kdcore.reproduce`): the teacher's arch, size and ``train`` fields, the
#: student as a :class:`RunConfig` dict (its teacher is the reproduced one) and the candidates ``--rank`` scores.
#: ``gpu``: the full recipe under bf16 autocast and ``torch.compile``, host syncs every 50 steps. ``cpu``: the full
#: recipe's schedules under bf16 autocast where the CPU computes bf16 natively (``amp="auto"``), no compile, the
#: student from the cached teacher logits (no teacher pass per step); sized for <= 2 h on 2 CPU cores
#: (docs/reproduce.md: measured end to end). ``tiny``: seconds, for tests (timm's ``test_resnet`` at 32 px).
REPRODUCE_PRESETS: dict[str, dict] = {
    "gpu": {
        "teacher": {"arch": "resnet18", "size": 128, "train": _FULL_TEACHER | _DEVICE},
        "student": {"student": "resnet10t_w20", "size": 128, "train": _FULL_STUDENT | _DEVICE,
                    "distill": _KD | {"teacher_cache": False}},
        "rank": {"candidates": ["resnet10t_w20", "mobilenetv2_035", "mobilenetv2_050", "mnasnet_050",
                                "efficientnet_lite0", "resnet10t"], "batch_size": 64},
    },
    "cpu": {
        "teacher": {"arch": "resnet18", "size": 128, "train": _FULL_TEACHER | {"amp": "auto"}},
        "student": {"student": "resnet10t_w20", "size": 128, "train": _FULL_STUDENT | {"amp": "auto"},
                    "distill": _KD | {"teacher_cache": True}},
        "rank": {"candidates": ["resnet10t_w20", "mobilenetv2_035", "mobilenetv2_050", "mnasnet_050"],
                 "batch_size": 64},
    },
    "tiny": {
        "teacher": {"arch": "test_resnet", "size": 32,
                    "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0.5, "log_every": 2}},
        "student": {"student": "test_resnet", "size": 32,
                    "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0.5, "log_every": 2},
                    "distill": _KD | {"teacher_cache": True}},
        "rank": {"candidates": ["test_resnet"], "batch_size": 8},
    },
}


def check_sem_rules(sem_map: str, recorded: dict[str, str]) -> dict[str, str]:
    """The rule of each side of ``sem``, ``{"map": sem_map, "teacher": ..., "student": ...}``, after checking
    ``recorded`` (a saved config's; empty, or recorded for another sem map, is made afresh): a :class:`KDCoreError`
    when its sides differ, or when kdcore no longer makes ``sem_map``'s maps by the recorded rule."""
    made = {"map": sem_map} | {side: map_rule(sem_map) for side in ("teacher", "student")}
    if recorded and recorded.get("teacher") != recorded.get("student"):
        raise KDCoreError(f"sem compares maps made by different rules (teacher {recorded.get('teacher')!r}, "
                          f"student {recorded.get('student')!r}): both sides must use one rule")
    if recorded and recorded.get("map") == sem_map and recorded != made:
        raise KDCoreError(f"sem rule {recorded['teacher']!r} is not the one sem map {sem_map!r} uses now "
                          f"({made['teacher']!r}): drop sem_rules from the config or choose another sem map")
    return made


@dataclass
class DistillConfig:
    """Which terms of :data:`~kdcore.distill.losses.LOSSES`, their weights and settings; saved under ``"distill"``."""

    loss: dict[str, float] = field(default_factory=lambda: {"ce": 1.0, "kd": 1.0})
    temperature: float = 4.0  # of kd, dkd and dist
    kd_standardize: bool = False  # kd on z-scored logits (logit standardisation)
    dkd_alpha: float = 1.0  # dkd's TCKD weight (DKD's own default)
    dkd_beta: float = 8.0  # dkd's NCKD weight (DKD's CIFAR-100 default)
    dist_beta: float = 1.0  # dist's inter-class (per-sample) weight (DIST's default)
    dist_gamma: float = 1.0  # dist's intra-class (per-class) weight (DIST's default)
    feat_distance: str = "cosine"  # one of FEAT_DISTANCES
    sem_map: str = "lrp"  # one of SEM_MAPS
    sem_rules: dict[str, str] = field(default_factory=dict)  # sem_map and the rule of each side's map
    teacher_cache: bool = True  # teacher outputs computed once: of the un-augmented images (maps warped per batch),
    # or with TrainConfig.views of every fixed view (logits, maps and features, exact)
    map_size: int = 32  # resolution of the cached teacher maps

    def __post_init__(self) -> None:
        self.loss = {k: float(v) for k, v in self.loss.items()}
        unknown = sorted(set(self.loss) - set(LOSSES))
        if unknown:
            raise KDCoreError(f"unknown loss term(s) {', '.join(unknown)}: choose from {', '.join(LOSSES)}")
        if not self.weights:
            raise KDCoreError("the loss has no term with a non-zero weight")
        if self.feat_distance not in FEAT_DISTANCES:
            raise KDCoreError(f"feat distance must be one of {', '.join(FEAT_DISTANCES)}, not {self.feat_distance!r}")
        if self.sem_map not in SEM_MAPS:
            raise KDCoreError(f"sem map must be one of {', '.join(SEM_MAPS)}, not {self.sem_map!r}")
        self.sem_rules = check_sem_rules(self.sem_map, self.sem_rules)

    @property
    def weights(self) -> dict[str, float]:
        """The active terms (non-zero weight), in registry order."""
        return {k: self.loss[k] for k in LOSSES if self.loss.get(k, 0.0) != 0.0}

    @property
    def teacher_needs(self) -> set[str]:
        """What the active terms need from the teacher: ``logits``, ``features``, ``map``."""
        return {need for k in self.weights for need in LOSSES[k].teacher}

    def describe(self) -> str:
        """E.g. ``1*ce + 1*kd(T=4) + 1*feat(cosine) + 1*sem(lrp epsilon-plus-flat)``."""
        def setting(k: str) -> str:
            fn = LOSSES[k].setting
            return f"({fn(self)})" if fn is not None else ""

        return " + ".join(f"{w:g}*{k}{setting(k)}" for k, w in self.weights.items())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


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
    def from_dict(cls, d: dict) -> RunConfig:
        base = cls()
        return cls(
            teacher=d.get("teacher", base.teacher), student=d.get("student", base.student),
            size=int(d.get("size", base.size)), init=d.get("init"), train=TrainConfig.from_dict(d.get("train", {})),
            distill=DistillConfig.from_dict(d.get("distill", {})),
        )


def merge_config(base: dict, over: dict) -> dict:
    """``over`` merged into the config dict ``base``, recursively; the ``loss`` dict is replaced as a whole (a term
    left out is off)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "loss" else v
    return out


def make_config(preset: str | None = None, file: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Defaults, then ``PRESETS[preset]``, then the JSON ``file``, then ``overrides`` (same nested layout)."""
    d = RunConfig().to_dict()
    if preset is not None:
        if preset not in PRESETS:
            raise KDCoreError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
        d = merge_config(d, PRESETS[preset])
    if file is not None:
        try:
            d = merge_config(d, json.loads(Path(file).read_text()))
        except (OSError, ValueError) as e:
            raise KDCoreError(f"{file}: unreadable config ({e})") from None
    return RunConfig.from_dict(merge_config(d, overrides or {}))


def config_from_options(preset: str | None = None, file: str | Path | None = None, **options) -> RunConfig:
    """:func:`make_config` from flat options, None meaning "not given": what a command line or a form collects.

    Each option is a field of :class:`RunConfig` (``teacher``, ``student``, ``size``, ``init``), of
    :class:`~kdcore.engine.loop.TrainConfig` (``epochs``, ``lr``, ...) or of :class:`DistillConfig` (``loss``,
    ``temperature``, ...), e.g. ``config_from_options("short", student="resnet10t", epochs=2, loss={"ce": 1})``.
    """
    overrides: dict = {"train": {}, "distill": {}}
    for name, value in options.items():
        if value is None:
            continue
        if name in ("teacher", "student", "size", "init"):
            overrides[name] = value
        elif name in TrainConfig.__dataclass_fields__:
            overrides["train"][name] = value
        elif name in DistillConfig.__dataclass_fields__:
            overrides["distill"][name] = value
        else:
            raise KDCoreError(f"unknown run option {name!r}")
    return make_config(preset, file, overrides)


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
