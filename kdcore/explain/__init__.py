"""Explanations of a classifier's prediction: LRP and Grad-CAM heatmaps with one call for every timm CNN.

* :func:`explain` -- detached maps for viewing and for a teacher's targets;
* :func:`student_map` -- maps that stay in the autograd graph of the parameters, for a distillation loss;
* :func:`class_maps` -- one map per class;
* :func:`render_overlay` -- the map over the slice as an RGB image with a colour bar.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.explain._common import Target, resize_maps
from kdcore.explain.differentiable import student_map
from kdcore.explain.gradcam import grad_cam
from kdcore.explain.lrp import lrp_map
from kdcore.explain.render import render_overlay

#: name -> ``fn(model, x (B, C, H, W), target) -> (B, H, W)``
METHODS = {"lrp": lrp_map, "gradcam": grad_cam}

__all__ = ["METHODS", "Target", "class_maps", "explain", "grad_cam", "lrp_map", "render_overlay", "student_map"]


def explain(model: nn.Module, x: torch.Tensor, target: Target = None, method: str = "lrp") -> torch.Tensor:
    """Heatmaps ``(B, H, W)`` at input size for ``x`` ``(B, C, H, W)``; ``target`` None = the predicted class.

    LRP maps are signed relevance summing to the target logit (up to the biases' share); Grad-CAM maps are >= 0.
    The model is evaluated in eval mode and left as it was (mode, hooks, weights, ``.grad``).
    """
    if method not in METHODS:
        raise KDCoreError(f"unknown explanation method {method!r}: choose from {', '.join(METHODS)}")
    return METHODS[method](model, x, target).detach()


def class_maps(model: nn.Module, x: torch.Tensor, method: str = "gradcam", size: tuple[int, int] | None = None,
               ) -> torch.Tensor:
    """One map per class of a timm model: ``(B, K, h, w)`` for input ``(B, C, H, W)``, at ``size`` (default ``(H, W)``).

    Costs ``K`` calls of :func:`explain`.
    """
    maps = torch.stack([explain(model, x, c, method) for c in range(model.num_classes)], 1)
    h, w = size or x.shape[-2:]
    return resize_maps(maps.flatten(0, 1), (h, w)).unflatten(0, maps.shape[:2])
