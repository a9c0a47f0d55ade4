"""The distiller: an :class:`~kdcore.engine.loop.Objective` that owns a frozen teacher, the student and a projector.

``forward`` returns the student's logits and the weighted terms of :data:`~kdcore.distill.losses.LOSSES`
chosen by a :class:`DistillConfig`. The teacher stays in eval mode without gradients; only the student (and
the ``feat`` projector, trained with it and never exported) are optimised. Teacher outputs come from a
:class:`~kdcore.distill.teacher_cache.TeacherCache` where they can (logits, and maps warped with the batch's
augmentation) and from a per-step teacher forward where they must (features of the augmented batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.distill.losses import (
    FEAT_DISTANCES, LOSSES, ce_loss, feat_loss, kd_loss, match_size, rel_loss, sem_loss,
)
from kdcore.distill.teacher_cache import TeacherCache, cached_maps, teacher_maps
from kdcore.errors import KDCoreError
from kdcore.data.imageio import InputSpec
from kdcore.engine.loop import Objective

SEM_MAPS = ("lrp", "gradcam")


@dataclass
class DistillConfig:
    """Which terms, their weights and settings; saved with the run under ``"distill"``."""

    loss: dict[str, float] = field(default_factory=lambda: {"ce": 1.0, "kd": 1.0})
    temperature: float = 4.0
    feat_distance: str = "cosine"
    sem_map: str = "lrp"
    teacher_cache: bool = True  # logits and maps of the un-augmented images, computed once (maps warped per batch)
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

    @property
    def weights(self) -> dict[str, float]:
        """The active terms (non-zero weight), in registry order."""
        return {k: self.loss[k] for k in LOSSES if self.loss.get(k, 0.0) != 0.0}

    @property
    def teacher_needs(self) -> set[str]:
        return {need for k in self.weights for need in LOSSES[k].teacher}

    def describe(self) -> str:
        """E.g. ``1*ce + 1*kd(T=4) + 1*feat(cosine) + 1*sem(lrp)``."""
        extra = {"kd": f"(T={self.temperature:g})", "feat": f"({self.feat_distance})", "sem": f"({self.sem_map})"}
        return " + ".join(f"{w:g}*{k}{extra.get(k, '')}" for k, w in self.weights.items())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def adapt_input(x: torch.Tensor, src: InputSpec, dst: InputSpec) -> torch.Tensor:
    """Re-express a model input ``(B, C, S, S)`` made under ``src`` in the convention of ``dst``."""
    if src == dst:
        return x
    x01 = x[:, :1] * src.std + src.mean
    if src.size != dst.size:
        x01 = F.interpolate(x01, size=(dst.size, dst.size), mode="bilinear", align_corners=False,
                            antialias=dst.size < src.size)
    x = (x01 - dst.mean) / dst.std
    return x.expand(-1, dst.channels, -1, -1) if dst.channels > 1 else x


def feature_channels(model: nn.Module, spec: InputSpec) -> tuple[int, tuple[int, int]]:
    """Channels and spatial size of ``model.forward_features`` for a ``spec`` input."""
    was = model.training
    model.eval()
    with torch.no_grad():
        dev = next(model.parameters()).device
        f = model.forward_features(torch.zeros(1, spec.channels, spec.size, spec.size, device=dev))
    model.train(was)
    return f.shape[1], tuple(f.shape[-2:])


def check_student_map(student: nn.Module, spec: InputSpec, method: str) -> None:
    """Raise :class:`KDCoreError` when the student's explanation map cannot be trained through (double backward).

    E.g. MobileNetV3's Hardsigmoid has no second derivative in PyTorch, so ``sem(lrp)`` cannot train it.
    """
    from kdcore.explain import student_map

    x = torch.zeros(1, spec.channels, spec.size, spec.size, device=next(student.parameters()).device)
    try:
        student_map(student, x, torch.zeros(1, dtype=torch.long, device=x.device), method=method).sum().backward()
    except RuntimeError as e:
        raise KDCoreError(f"sem({method}) cannot train this student: {str(e).splitlines()[0]}") from None
    finally:
        student.zero_grad(set_to_none=True)


class Distiller(Objective):
    """``forward(x (B, C, S, S), y (B,), theta (B, 2, 3) | None, index (B,)) -> (logits (B, K), {term: weighted})``.

    ``index`` are the batch's positions in the training set (rows of ``cache``); ``theta`` its augmentation.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        student_spec: InputSpec,
        teacher_spec: InputSpec,
        cfg: DistillConfig,
        label_smoothing: float = 0.0,
        cache: TeacherCache | None = None,
    ):
        super().__init__()
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)
        self.student_spec, self.teacher_spec = student_spec, teacher_spec
        self.cfg = cfg
        self.weights = cfg.weights
        self.label_smoothing = label_smoothing
        self.cache = cache
        needs = cfg.teacher_needs
        if "map" in needs and cache is not None and cache.maps is None:
            raise KDCoreError("the teacher cache holds no maps, but the sem term needs them")
        # a teacher forward per step only when something cannot come from the cache
        self.teacher_forward = "features" in needs or (cache is None and "logits" in needs)
        if "sem" in self.weights:
            check_student_map(student, student_spec, cfg.sem_map)
        self.projector = None
        if "feat" in self.weights:
            c_s, _ = feature_channels(student, student_spec)
            c_t, _ = feature_channels(teacher, teacher_spec)
            self.projector = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()
        return self

    def extra_summary(self) -> dict:
        return {"distill_loss": self.cfg.describe(), "teacher_cache": self.cache is not None}

    def teacher_outputs(
        self, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor | None, index: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """What the active terms need: ``logits`` ``(B, K)``, ``features`` ``(B, C_t, h, w)``, ``map`` ``(B, m, m)``."""
        needs, out = self.cfg.teacher_needs, {}
        if self.cache is not None and index is None:
            raise KDCoreError("a cached teacher needs the batch's training-set index")
        per_step = self.teacher_forward or self.cache is None
        xt = adapt_input(x, self.student_spec, self.teacher_spec) if per_step else None
        if self.teacher_forward:
            with torch.no_grad():
                out["features"] = self.teacher.forward_features(xt)
                out["logits"] = self.teacher.forward_head(out["features"])
        rows = index.cpu() if index is not None else None
        if "logits" in needs and "logits" not in out:
            out["logits"] = self.cache.logits[rows].to(x.device)
        if "map" in needs:
            if self.cache is not None:
                out["map"] = cached_maps(self.cache.maps[rows].to(x.device), theta)
            else:
                out["map"] = teacher_maps(self.teacher, xt, y, self.cfg.sem_map, self.cfg.map_size)
        return out

    def forward(self, x, y, theta=None, index=None):
        w, cfg = self.weights, self.cfg
        feats = self.student.forward_features(x)
        logits = self.student.forward_head(feats)
        t = self.teacher_outputs(x, y, theta, index)
        terms = {}
        if "ce" in w:
            terms["ce"] = ce_loss(logits, y, self.label_smoothing)
        if "kd" in w:
            terms["kd"] = kd_loss(logits, t["logits"], cfg.temperature)
        if "feat" in w:
            projected = self.projector(match_size(feats, tuple(t["features"].shape[-2:])))
            terms["feat"] = feat_loss(projected, t["features"], cfg.feat_distance)
        if "sem" in w:
            from kdcore.explain import student_map

            terms["sem"] = sem_loss(student_map(self.student, x, y, method=cfg.sem_map), t["map"])
        if "rel" in w:
            terms["rel"] = rel_loss(feats, t["features"])
        return logits, {k: w[k] * v for k, v in terms.items()}
