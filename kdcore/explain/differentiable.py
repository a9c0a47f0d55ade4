"""Gradient x input, the ``"lrp0"`` map of a distillation loss (on both the teacher's and the student's side).

``R = x * d logit_t / dx``, built with ``create_graph=True`` so a loss on it trains the model. On a network of
convolutions, BatchNorm, ReLU, max and average pooling and residual sums (all ResNets) this **is** LRP-0, the
epsilon rule with ``eps -> 0`` on every layer (Montavon et al. 2019, sec. 10.2.1; Ancona et al. 2018): by induction
``R_j = a_j * d f / d a_j`` at every layer; on Hardswish/SiLU/ReLU6 and gated blocks it is gradient x input only.
It is not the EpsilonPlusFlat map of :func:`kdcore.explain.lrp_map`: the differentiable map with those rules is
:func:`kdcore.explain.lrp_autograd.lrp_autograd`. :func:`kdcore.explain.student_map` and
:func:`kdcore.explain.teacher_map` pick the maps by name.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcore.explain._common import Target, evaluating, resolve_targets, target_logits


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Differentiable ``x * d logit_t / dx`` summed over channels: ``(B, C, H, W)`` -> ``(B, H, W)``."""
    with evaluating(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        chosen = target_logits(logits, resolve_targets(logits, target))
        (grad,) = torch.autograd.grad(chosen.sum(), x, create_graph=True)
    return (x * grad).sum(1)
