"""Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage, optionally differentiable.

The layer is timm's ``feature_info[-1]['module']`` (``layer4`` for ResNets, the last ``blocks`` stage for
MobileNet/EfficientNet). The same code serves the viewer (``create_graph=False``) and the distillation loss
(``create_graph=True``: the map stays a function of every parameter); :func:`cam` is the formula, shared with the
per-class maps of :mod:`kdcore.explain.class_maps`. ``tests/test_explain.py`` checks both against captum's
``LayerGradCam``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.explain._common import Target, evaluating, resize_maps, resolve_targets, target_logits


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM weighs: timm's last feature stage."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise KDCoreError(f"{type(model).__name__}: no timm feature_info, cannot find the last convolutional stage")
    return model.get_submodule(info[-1]["module"])


def cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM ``relu(sum_c mean_hw(g_c) A_c)`` ``(B, h, w)`` from a layer's activations ``A`` ``(B, C, h, w)``
    and the gradient ``g`` of the target logit with respect to them (same shape)."""
    return F.relu((grads.mean((2, 3), keepdim=True) * acts).sum(1))


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target = None, create_graph: bool = False) -> torch.Tensor:
    """Grad-CAM maps ``(B, H, W)`` (>= 0, bilinearly upsampled) for input ``(B, C, H, W)``, computed in eval mode.

    ``create_graph=True`` keeps the map in the autograd graph of the model's parameters (for a loss on it).
    """
    layer = gradcam_layer(model)
    stage: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, out: stage.append(out))
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            acts = stage[-1]
            targets = resolve_targets(logits, target)
            (grads,) = torch.autograd.grad(target_logits(logits, targets).sum(), acts, create_graph=create_graph)
    finally:
        handle.remove()
    return resize_maps(cam(acts, grads), tuple(x.shape[-2:]))
