"""Distillation loss terms: pure functions of tensors, registered by name in :data:`LOSSES`.

Each function returns a scalar (the mean over the batch); the :class:`~kdcore.distill.distiller.Distiller`
weights and sums them. ``LOSSES[name].teacher`` says what a term needs from the teacher, so the distiller
computes only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from kdcore.rank.diswot import relation_matrix

FEAT_DISTANCES = ("cosine", "l2")


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits ``(B, K)`` with labels ``(B,)``."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's ``T² KL(softmax(z_t / T) || softmax(z_s / T))``, averaged over the batch; logits ``(B, K)``."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def _flat_cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``1 - cos(vec a_i, vec b_i)`` for ``(B, ...)`` tensors of equal shape."""
    return (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)).mean()


def feat_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distance of projected student features to teacher features, both ``(B, C_t, H, W)``.

    ``cosine``: ``1 - cos`` of each sample's flattened map (scale-free); ``l2``: mean squared error (FitNets).
    """
    teacher_feat = teacher_feat.detach()
    if distance == "cosine":
        return _flat_cosine_distance(student_feat, teacher_feat)
    if distance == "l2":
        return F.mse_loss(student_feat, teacher_feat)
    raise ValueError(f"feat distance must be one of {FEAT_DISTANCES}, not {distance!r}")


def match_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``size``: average pooling to shrink, bilinear interpolation to grow."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def sem_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` of the flattened explanation maps ``(B, H, W)`` and ``(B, h, w)``, both at the smaller size."""
    size = (min(student_map.shape[-2], teacher_map.shape[-2]), min(student_map.shape[-1], teacher_map.shape[-1]))
    s = match_size(student_map.unsqueeze(1), size)
    t = match_size(teacher_map.detach().unsqueeze(1).to(s.dtype), size)
    return _flat_cosine_distance(s, t)


def rel_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """DisWOT's relation distance ``M_r = ||G_t - G_s||²_F / B²`` of pre-pooling features ``(B, C, H, W)``.

    ``G`` is :func:`kdcore.rank.diswot.relation_matrix` (``F Fᵀ`` with L2-normalised rows, in float64).
    """
    g_s, g_t = relation_matrix(student_feat), relation_matrix(teacher_feat.detach())
    return ((g_t - g_s).pow(2).sum() / len(g_s) ** 2).to(student_feat.dtype)


@dataclass(frozen=True)
class LossTerm:
    """A registered term: its function, its formula (for logs and cards) and what it needs from the teacher."""

    fn: Callable[..., torch.Tensor]
    formula: str
    teacher: tuple[str, ...]  # "logits", "features", "map"


LOSSES: dict[str, LossTerm] = {
    "ce": LossTerm(ce_loss, "CE(z_s, y)", ()),
    "kd": LossTerm(kd_loss, "T^2 KL(softmax(z_t/T) || softmax(z_s/T))", ("logits",)),
    "feat": LossTerm(feat_loss, "d(P(f_s), f_t), d = 1 - cos | MSE, P = 1x1 conv + BN", ("features",)),
    "sem": LossTerm(sem_loss, "1 - cos(vec M_s[y], vec M_t[y]), M = LRP | Grad-CAM", ("map",)),
    "rel": LossTerm(rel_loss, "||G_t - G_s||_F^2 / B^2, G = rownorm(F F^T)", ("features",)),
}
