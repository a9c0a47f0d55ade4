"""Grad-CAM (Selvaraju et al. 2017) on a chosen feature stage or two fused, optionally differentiable.

Stages are timm's ``feature_info``: ``last`` is ``feature_info[-1]`` (``layer4`` of a ResNet: a 4x4 grid at
128 px), ``previous`` the stage before it (``layer3``: 8x8). ``product`` and ``mean`` fuse the two: each map is
divided by its own maximum, then multiplied (regions both stages point at) or averaged. The same code serves the
viewer (``create_graph=False``) and the distillation loss (``create_graph=True``: the map stays a function of
every parameter); :func:`cam` is the formula, shared with the per-class maps of
:mod:`kdcore.explain.class_maps`. ``tests/explain/test_explain.py`` checks the ``last`` map before upsampling
against captum's ``LayerGradCam``.

Upsampling (:func:`upsample_cam`) places each feature cell's value at the centre of the pixels it covers and
interpolates bilinearly between centres; beyond the outermost centres it fades towards zero (the grid's
continuation outside the image) instead of holding the border value, which would draw flat plateaus along the
edges whose first pixel wins every tie for the maximum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.explain._common import Target, evaluating, resolve_targets, target_logits

#: Grad-CAM layer choices: one stage, or both fused.
LAYERS = ("last", "previous", "product", "mean")


def feature_stages(model: nn.Module) -> list[dict]:
    """timm's ``feature_info`` entries (``module``, ``reduction``) of ``model``."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise KDCoreError(f"{type(model).__name__}: no timm feature_info, cannot find the last convolutional stage")
    return list(info)


def gradcam_layer(model: nn.Module, stage: int = -1) -> nn.Module:
    """The module whose output Grad-CAM weighs: timm's feature stage ``stage`` (-1 = the last)."""
    return model.get_submodule(feature_stages(model)[stage]["module"])


def cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM ``relu(sum_c mean_hw(g_c) A_c)`` ``(B, h, w)`` from a layer's activations ``A`` ``(B, C, h, w)``
    and the gradient ``g`` of the target logit with respect to them (same shape)."""
    return F.relu((grads.mean((2, 3), keepdim=True) * acts).sum(1))


def upsample_cam(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` feature-grid maps -> ``(B, H, W)``: bilinear between cell centres, fading to zero beyond the
    outermost ones (no border plateaus); differentiable."""
    b = maps.shape[0]
    theta = torch.eye(2, 3, dtype=maps.dtype, device=maps.device).expand(b, 2, 3)
    grid = F.affine_grid(theta, [b, 1, *size], align_corners=False)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def _unit_max(maps: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` maps each divided by its own maximum (all-zero maps stay zero)."""
    return maps / maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target = None, create_graph: bool = False,
             layer: str = "last") -> torch.Tensor:
    """Grad-CAM maps ``(B, H, W)`` (>= 0) for input ``(B, C, H, W)`` at ``layer`` (:data:`LAYERS`), computed in
    eval mode.

    ``create_graph=True`` keeps the map in the autograd graph of the model's parameters (for a loss on it).
    """
    if layer not in LAYERS:
        raise KDCoreError(f"unknown Grad-CAM layer {layer!r}: choose from {', '.join(LAYERS)}")
    stages = {"last": [-1], "previous": [-2]}.get(layer, [-2, -1])
    acts: dict[int, torch.Tensor] = {}
    handles = [gradcam_layer(model, s).register_forward_hook(
        lambda module, args, out, s=s: acts.__setitem__(s, out)) for s in stages]
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            targets = resolve_targets(logits, target)
            grads = torch.autograd.grad(target_logits(logits, targets).sum(), [acts[s] for s in stages],
                                        create_graph=create_graph)
    finally:
        for h in handles:
            h.remove()
    size = tuple(x.shape[-2:])
    maps = [upsample_cam(cam(acts[s], g), size) for s, g in zip(stages, grads)]
    if layer == "product":
        return _unit_max(maps[0]) * _unit_max(maps[1])
    if layer == "mean":
        return (_unit_max(maps[0]) + _unit_max(maps[1])) / 2
    return maps[0]
