"""Explanation maps that stay differentiable in the model's parameters, for a loss on the student's explanation.

zennit builds its modified weights from ``param.data``, so the gradients it gives through ``create_graph=True``
are wrong for training (cosine with the true gradient below 0.1, nothing reaches the classifier). Here the maps are
plain autograd expressions of the parameters instead:

* ``"lrp"``: gradient x input, ``R = x * d logit_t / dx``, built with ``create_graph=True``. On a network of
  convolutions, BatchNorm, ReLU, max and average pooling and residual sums (all ResNets) this **is** LRP-0, the
  epsilon rule with ``eps -> 0`` on every layer (Montavon et al. 2019, sec. 10.2.1; Ancona et al. 2018): by induction
  ``R_j = a_j * d f / d a_j`` at every layer. It is not the EpsilonPlusFlat map of :func:`kdcore.explain.lrp_map`
  (z+ and flat rules are not gradients), and on Hardswish/SiLU/ReLU6 and gated blocks it is gradient x input only.
* ``"gradcam"``: :func:`kdcore.explain.gradcam.grad_cam` with ``create_graph=True``.

:func:`kdcore.explain.student_map` picks one by name (``Method.differentiable``). Both run the model in eval mode
(running BatchNorm statistics, so each sample's map depends on that sample only), with grouped convolutions in
:class:`kdcore.explain.grouped_conv.FastGroupedConvs` (a loss on the map differentiates each convolution's
backward, which PyTorch does one group at a time).
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
