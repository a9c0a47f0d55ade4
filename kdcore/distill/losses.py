"""Distillation loss terms: pure functions of tensors, and the registry :data:`LOSSES` the distiller sums.

Each pure function (``ce_loss``, ``kd_loss``, ...) returns a scalar, the mean over the batch. A term is registered
once, with :func:`register_loss`, as a function ``fn(d, s) -> scalar`` of the
:class:`~kdcore.distill.distiller.Distiller` ``d`` (its models and :class:`~kdcore.distill.config.DistillConfig`)
and the step's tensors ``s`` (:class:`Step`), together with its formula (for logs and cards), what it needs from the
teacher (so the distiller computes only that), its setting as shown in :meth:`DistillConfig.describe`, and an
optional ``setup(d)`` run once when the distiller is built (a check, or a trainable part such as ``feat``'s
projector). The distiller returns ``{name: weight * fn(d, s)}`` over the configured terms, in registry order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.explain import evaluating, resize_maps, student_map
from kdcore.explain.class_maps import relation_matrix

if TYPE_CHECKING:
    from kdcore.distill.config import DistillConfig
    from kdcore.distill.distiller import Distiller

FEAT_DISTANCES = ("cosine", "l2")


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits ``(B, K)`` with labels ``(B,)`` (or soft targets ``(B, K)``)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def standardize_logits(logits: torch.Tensor) -> torch.Tensor:
    """Each row of ``(B, K)`` logits z-scored: ``(z - mean) / (std + 1e-7)``, std with Bessel's correction.

    Logit standardisation (Sun et al., CVPR 2024): the student then matches the teacher's logit relations, not their
    scale.
    """
    return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + 1e-7)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            standardize: bool = False) -> torch.Tensor:
    """Hinton's ``T² KL(softmax(z_t / T) || softmax(z_s / T))``, averaged over the batch; logits ``(B, K)``.

    ``standardize``: both logits through :func:`standardize_logits` first.
    """
    teacher_logits = teacher_logits.detach()
    if standardize:
        student_logits, teacher_logits = standardize_logits(student_logits), standardize_logits(teacher_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
             beta: float, temperature: float) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha TCKD + beta NCKD``, each ``T² KL``, averaged over the batch.

    Logits ``(B, K)``, class indices ``(B,)``. TCKD: KL of the binary distributions (target class, the rest) of
    ``softmax(z / T)``. NCKD: KL of the distributions over the non-target classes, made as the official code does:
    the target logit lowered by 1000 before the softmax.
    """
    gt = F.one_hot(labels, student_logits.shape[1]).to(student_logits.dtype)
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1)
    tckd = F.kl_div(torch.log(b_s.clamp_min(torch.finfo(b_s.dtype).tiny)), b_t, reduction="batchmean")
    log_q_s = F.log_softmax(student_logits / temperature - 1000.0 * gt, dim=1)
    q_t = F.softmax(teacher_logits.detach() / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="batchmean")
    return (alpha * tckd + beta * nckd) * temperature**2


def _mean_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the Pearson correlation of the rows of ``(N, M)`` tensors ``a`` and ``b`` (DIST's eps)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean()


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, gamma: float,
              temperature: float) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022): ``T² (beta inter + gamma intra)`` of ``P = softmax(z / T)`` ``(B, K)``.

    ``inter = 1 - mean Pearson(P_s[i], P_t[i])`` over the samples (rows), ``intra`` the same over the classes
    (columns, across the batch: a batch of one gives ``intra = 1`` and no gradient).
    """
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    inter = 1 - _mean_pearson(p_s, p_t)
    intra = 1 - _mean_pearson(p_s.T, p_t.T)
    return (beta * inter + gamma * intra) * temperature**2


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


def sem_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` of the flattened explanation maps ``(B, H, W)`` and ``(B, h, w)``, both at the smaller size."""
    size = (min(student_map.shape[-2], teacher_map.shape[-2]), min(student_map.shape[-1], teacher_map.shape[-1]))
    s = resize_maps(student_map.unsqueeze(1), size)
    t = resize_maps(teacher_map.detach().unsqueeze(1).to(s.dtype), size)
    return _flat_cosine_distance(s, t)


def rel_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """DisWOT's relation distance ``M_r = ||G_t - G_s||²_F / B²`` of pre-pooling features ``(B, C, H, W)``.

    ``G`` is :func:`kdcore.explain.class_maps.relation_matrix` (``F Fᵀ`` with L2-normalised rows, in float64).
    """
    g_s, g_t = relation_matrix(student_feat), relation_matrix(teacher_feat.detach())
    return ((g_t - g_s).pow(2).sum() / len(g_s) ** 2).to(student_feat.dtype)


@dataclass
class Step:
    """One training step as the terms see it."""

    x: torch.Tensor  #: the student's input ``(B, C, S, S)``
    y: torch.Tensor  #: class indices ``(B,)``, or soft targets ``(B, K)`` under mixup
    feats: torch.Tensor  #: the student's pre-pooling features ``(B, C_s, h, w)``
    logits: torch.Tensor  #: the student's logits ``(B, K)``
    teacher: dict[str, torch.Tensor]  #: what the active terms need: logits, features, map (see ``LossTerm``)


@dataclass(frozen=True)
class LossTerm:
    """A registered term: its function, its formula, what it needs from the teacher, its setting and its setup."""

    fn: Callable[[Distiller, Step], torch.Tensor]
    formula: str
    teacher: tuple[str, ...]  #: "logits" ``(B, K)``, "features" ``(B, C_t, h, w)``, "map" ``(B, m, m)``
    setting: Callable[[DistillConfig], str] | None = None  #: e.g. ``"T=4"``, shown as ``kd(T=4)``
    setup: Callable[[Distiller], None] | None = None


#: name -> term, in the order the terms are computed and reported
LOSSES: dict[str, LossTerm] = {}


def register_loss(
    name: str,
    formula: str,
    teacher: tuple[str, ...] = (),
    setting: Callable[[DistillConfig], str] | None = None,
    setup: Callable[[Distiller], None] | None = None,
) -> Callable[[Callable[[Distiller, Step], torch.Tensor]], Callable[[Distiller, Step], torch.Tensor]]:
    """Decorator: register ``fn(d, s) -> scalar`` as the loss term ``name`` of :data:`LOSSES`."""

    def register(fn: Callable[[Distiller, Step], torch.Tensor]) -> Callable[[Distiller, Step], torch.Tensor]:
        if name in LOSSES:
            raise ValueError(f"loss term {name!r} is registered already")
        LOSSES[name] = LossTerm(fn, formula, teacher, setting, setup)
        return fn

    return register


def feature_channels(model: nn.Module, spec: InputSpec) -> tuple[int, tuple[int, int]]:
    """Channels and spatial size of ``model.forward_features`` for a ``spec`` input."""
    with evaluating(model), torch.no_grad():
        dev = next(model.parameters()).device
        f = model.forward_features(torch.zeros(1, spec.channels, spec.size, spec.size, device=dev))
    return f.shape[1], tuple(f.shape[-2:])


def add_projector(d: Distiller) -> None:
    """``feat``'s setup: ``d.projector``, a 1x1 conv + BN from the student's channels to the teacher's.

    It is trained with the student and saved in checkpoints, never exported.
    """
    c_s, _ = feature_channels(d.student, d.student_spec)
    c_t, _ = feature_channels(d.teacher, d.teacher_spec)
    d.projector = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))


def check_student_map(d: Distiller) -> None:
    """``sem``'s setup: raise :class:`KDCoreError` when the student's map cannot be trained through.

    Training through a gradient map takes a double backward; e.g. MobileNetV3's Hardsigmoid has no second
    derivative in PyTorch, so ``sem(lrp0)`` and ``sem(gradcam)`` cannot train it. A student with a layer the
    differentiable LRP rules do not cover is refused by :func:`kdcore.explain.lrp_autograd.check_supported`. Both
    maps' rule is checked by the config (:func:`kdcore.distill.config.check_sem_rules`).
    """
    spec, method = d.student_spec, d.cfg.sem_map
    x = torch.zeros(1, spec.channels, spec.size, spec.size, device=next(d.student.parameters()).device)
    try:
        student_map(d.student, x, torch.zeros(1, dtype=torch.long, device=x.device), method=method).sum().backward()
    except RuntimeError as e:
        raise KDCoreError(f"sem({method}) cannot train this student: {str(e).splitlines()[0]}") from None
    finally:
        d.student.zero_grad(set_to_none=True)


@register_loss("ce", "CE(z_s, y)")
def _ce(d: Distiller, s: Step) -> torch.Tensor:
    return ce_loss(s.logits, s.y, d.label_smoothing)


@register_loss("kd", "T^2 KL(softmax(z_t/T) || softmax(z_s/T)), z z-scored per sample if standardised",
               ("logits",), lambda c: f"T={c.temperature:g}" + (", z-score" if c.kd_standardize else ""))
def _kd(d: Distiller, s: Step) -> torch.Tensor:
    return kd_loss(s.logits, s.teacher["logits"], d.cfg.temperature, d.cfg.kd_standardize)


@register_loss("dkd", "T^2 (alpha KL(b_t || b_s) + beta KL(q_t || q_s)), b = (p_y, 1 - p_y), q = p over classes != y",
               ("logits",), lambda c: f"T={c.temperature:g}, alpha={c.dkd_alpha:g}, beta={c.dkd_beta:g}")
def _dkd(d: Distiller, s: Step) -> torch.Tensor:
    return dkd_loss(s.logits, s.teacher["logits"], s.y, d.cfg.dkd_alpha, d.cfg.dkd_beta, d.cfg.temperature)


@register_loss("dist", "T^2 (beta (1 - mean_i r(P_s[i], P_t[i])) + gamma (1 - mean_k r(P_s[:, k], P_t[:, k]))), "
               "r = Pearson, P = softmax(z/T)",
               ("logits",), lambda c: f"T={c.temperature:g}, beta={c.dist_beta:g}, gamma={c.dist_gamma:g}")
def _dist(d: Distiller, s: Step) -> torch.Tensor:
    return dist_loss(s.logits, s.teacher["logits"], d.cfg.dist_beta, d.cfg.dist_gamma, d.cfg.temperature)


@register_loss("feat", "d(P(f_s), f_t), d = 1 - cos | MSE, P = 1x1 conv + BN", ("features",),
               lambda c: c.feat_distance, add_projector)
def _feat(d: Distiller, s: Step) -> torch.Tensor:
    t = s.teacher["features"]
    return feat_loss(d.projector(resize_maps(s.feats, tuple(t.shape[-2:]))), t, d.cfg.feat_distance)


@register_loss("sem", "1 - cos(vec M_s[y], vec M_t[y]), M = LRP | LRP-0 | Grad-CAM, one rule on both sides",
               ("map",), lambda c: c.sem_rules["student"], check_student_map)
def _sem(d: Distiller, s: Step) -> torch.Tensor:
    return sem_loss(student_map(d.student, s.x, s.y, method=d.cfg.sem_map), s.teacher["map"])


@register_loss("rel", "||G_t - G_s||_F^2 / B^2, G = rownorm(F F^T)", ("features",))
def _rel(d: Distiller, s: Step) -> torch.Tensor:
    return rel_loss(s.feats, s.teacher["features"])
