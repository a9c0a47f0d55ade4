"""The distiller: an :class:`~kdcore.engine.loop.Objective` that owns a frozen teacher, the student and a projector.

``forward`` returns the student's logits and ``{name: weight * term}`` for the terms of
:data:`~kdcore.distill.losses.LOSSES` chosen by a :class:`~kdcore.distill.config.DistillConfig`. The teacher stays in
eval mode without gradients; only the student (and what a term's setup adds, e.g. the ``feat`` projector, trained
with it and never exported) are optimised. Teacher outputs come from a
:class:`~kdcore.distill.teacher_cache.TeacherCache` where they can (logits, and maps warped with the batch's
augmentation; with fixed views also features, all exact) and from a per-step teacher forward where they must
(features of a freshly augmented batch).
"""

from __future__ import annotations

import torch
from torch import nn

from kdcore.data.augment import adapt_input
from kdcore.data.imageio import InputSpec
from kdcore.distill.config import DistillConfig
from kdcore.distill.losses import LOSSES, Step
from kdcore.distill.teacher_cache import TeacherCache, cached_maps, teacher_maps
from kdcore.engine.loop import Objective
from kdcore.errors import KDCoreError


class Distiller(Objective):
    """``forward(x (B, C, S, S), y (B,), theta (B, 2, 3) | None, index (B,)) -> (logits (B, K), {term: weighted})``.

    ``index`` are the batch's rows of ``cache`` (training images, or their fixed views); ``theta`` its augmentation.
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
        self.teacher_forward = ("features" in needs and (cache is None or cache.features is None)) or (
            cache is None and "logits" in needs)
        for name in self.weights:
            if LOSSES[name].setup is not None:
                LOSSES[name].setup(self)

    def train(self, mode: bool = True) -> Distiller:
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
                if self.cache is None:  # with a cache, kd means the same targets whatever else is computed
                    out["logits"] = self.teacher.forward_head(out["features"])
        rows = index.cpu() if self.cache is not None else None  # the cache is host memory
        if "logits" in needs and "logits" not in out:
            out["logits"] = self.cache.logits[rows].to(x.device)
        if "features" in needs and "features" not in out:
            out["features"] = self.cache.features[rows].to(x.device, torch.float32)
        if "map" in needs:
            if self.cache is not None:
                warp_theta = theta if self.cache.views is None else None  # a view's map is already its own
                out["map"] = cached_maps(self.cache.maps[rows].to(x.device), warp_theta)
            else:
                out["map"] = teacher_maps(self.teacher, xt, y, self.cfg.sem_map, self.cfg.map_size)
        return out

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor | None = None, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.student.forward_features(x)
        logits = self.student.forward_head(feats).float()  # the loss terms in float32, also under autocast
        step = Step(x, y, feats, logits, self.teacher_outputs(x, y, theta, index))
        return step.logits, {name: w * LOSSES[name].fn(self, step) for name, w in self.weights.items()}
