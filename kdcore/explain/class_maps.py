"""Maps of every class for a batch, and the similarity matrices that DisWOT ranking and the relation loss compare.

* :func:`class_maps` -- one detached map per class ``(B, K, h, w)``. Grad-CAM is taken at the pre-pooling feature
  map (``model.forward_features``, the input of ``model.forward_head``): the backbone runs once and each class
  costs one backward pass through the head. LRP is one :func:`kdcore.explain.explain` call per class.
* :func:`class_similarity` -- ``(K, K)`` cosine similarities between the classes' maps;
* :func:`relation_matrix` -- ``(N, N)`` relations between the samples of a feature map.

The pre-pooling map is the layer :func:`kdcore.explain.explain` weighs for Grad-CAM (timm's last feature stage)
on ResNet, RegNet, LCNet and MobileNetV3/V4; on EfficientNet, MobileNetV2, MnasNet and GhostNet
``forward_features`` adds a 1x1 head convolution after that stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.explain._common import evaluating, resize_maps
from kdcore.explain.gradcam import cam
from kdcore.explain.methods import get_method


def feature_grad_cams(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of every class at the pre-pooling map: features ``(B, C, h, w)`` -> ``(B, K, h, w)``.

    ``features`` is ``model.forward_features(x)`` (without a graph is fine); gradients flow through
    ``model.forward_head`` only. Equals captum's ``LayerGradCam(..., relu_attributions=True)`` on the layer that
    outputs ``forward_features``.
    """
    if features.ndim != 4:
        raise KDCoreError(f"{type(model).__name__}: Grad-CAM needs a (B, C, h, w) feature map, "
                          f"got {tuple(features.shape)}")
    acts = features.detach().requires_grad_(True)
    k = model.num_classes
    with torch.enable_grad():
        logits = model.forward_head(acts)
        grads = [torch.autograd.grad(logits[:, c].sum(), acts, retain_graph=c < k - 1)[0] for c in range(k)]
    return torch.stack([cam(acts, g) for g in grads], 1).detach()


def class_maps(model: nn.Module, x: torch.Tensor, method: str = "gradcam", size: tuple[int, int] | None = None,
               features: torch.Tensor | None = None) -> torch.Tensor:
    """One map per class of a timm model: ``(B, K, h, w)`` for input ``(B, C, H, W)``, at ``size`` (default
    ``(H, W)``; area averages to shrink, bilinear to grow).

    ``features`` (``model.forward_features(x)``) saves Grad-CAM a forward pass when already computed. The model is
    evaluated in eval mode and left as it was.
    """
    fn = get_method(method).fn
    with evaluating(model):
        if method == "gradcam":
            if features is None:
                with torch.no_grad():
                    features = model.forward_features(x)
            maps = feature_grad_cams(model, features)
        else:
            maps = torch.stack([fn(model, x, c).detach() for c in range(model.num_classes)], 1)
    return resize_maps(maps, size or tuple(x.shape[-2:]))


def class_similarity(maps: torch.Tensor) -> torch.Tensor:
    """``(K, P)`` class maps -> ``(K, K)`` cosine similarities between classes (float64)."""
    a = F.normalize(maps.double(), dim=1)
    return a @ a.T


def relation_matrix(features: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` features -> ``(N, N)`` Gram matrix ``F Fᵀ`` with L2-normalised rows (float64)."""
    f = features.flatten(1).double()
    f = f / f.abs().max().clamp_min(1e-30)  # a global scale (random inits can overflow); rownorm undoes it
    return F.normalize(f @ f.T, dim=1)
