"""The explanation methods, registered by name in :data:`METHODS`, and the two calls that dispatch on the name.

A :class:`Method` holds everything kdcore knows about one method: its map for viewing and for a teacher's targets,
its differentiable map for a student's loss, its settings (each with its choices, the first the default), its
native resolution, and how the app names it and colours its overlay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.explain._common import Target
from kdcore.explain.differentiable import gradient_x_input
from kdcore.explain.gradcam import LAYERS, grad_cam
from kdcore.explain.grouped_conv import FastGroupedConvs
from kdcore.explain.lrp import COMPOSITES, lrp_map
from kdcore.explain.lrp_autograd import lrp_autograd

#: ``fn(model, x (B, C, H, W), target, **settings) -> (B, H, W)``
MapFn = Callable[[nn.Module, torch.Tensor, Target], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One explanation method: its maps, its name and description in the app, its overlay's colour scale."""

    fn: MapFn  #: the map explained (detached by :func:`explain`)
    differentiable: MapFn  #: ``fn``'s map (same settings, same rules) with a gradient reaching every parameter
    title: str  #: short name, e.g. under an overlay
    description: str  #: one line on what the map shows
    colour_map: str  #: matplotlib colour map of the overlay
    signed: bool  #: colour scale ``[-m, m]`` (signed maps) or ``[0, m]``
    scale_percentile: float  #: the percentile of ``|map|`` that ends the colour scale (``m``)
    options: dict[str, tuple[str, ...]]  #: each setting's choices, the first its default
    native: Callable[[dict], str]  #: the map's native resolution under the given settings, in words

    @property
    def defaults(self) -> dict[str, str]:
        """Every setting at its default."""
        return {name: choices[0] for name, choices in self.options.items()}

    def resolve(self, settings: dict | None = None) -> dict[str, str]:
        """``settings`` completed with the defaults; a :class:`KDCoreError` for an unknown setting or choice."""
        out = self.defaults
        for name, value in (settings or {}).items():
            if name not in self.options:
                raise KDCoreError(f"{self.title} has no setting {name!r} (settings: {', '.join(self.options)})")
            if value not in self.options[name]:
                raise KDCoreError(f"{self.title} {name} {value!r}: choose from {', '.join(self.options[name])}")
            out[name] = value
        return out

    def caption(self, settings: dict | None = None) -> str:
        """One line naming the method, its settings and its native resolution, e.g. under a heatmap."""
        chosen = self.resolve(settings)
        return f"{self.title} ({', '.join(f'{k} {v}' for k, v in chosen.items())}; native: {self.native(chosen)})"


_GRADCAM_GRIDS = {"last": "the last stage's grid (1/32 of the input side on a ResNet)",
                  "previous": "the grid of the stage before the last (1/16 of the input side on a ResNet)",
                  "product": "the product of both stages' grids (1/32 and 1/16 of the input side on a ResNet)",
                  "mean": "the mean of both stages' grids (1/32 and 1/16 of the input side on a ResNet)"}


METHODS: dict[str, Method] = {
    "lrp": Method(
        lrp_map, lrp_autograd, "LRP",
        "how much each pixel contributed to the predicted class, traced back layer by layer (red for, blue against).",
        "bwr", True, 99.5,  # relevance is heavy-tailed: the largest values saturate
        {"composite": tuple(COMPOSITES)}, lambda settings: "one value per input pixel"),
    "gradcam": Method(
        grad_cam, partial(grad_cam, create_graph=True), "Grad-CAM",
        "which regions of a convolutional stage drive the predicted class (coarse, always >= 0).",
        "inferno", False, 100.0, {"layer": LAYERS},
        lambda settings: _GRADCAM_GRIDS[settings["layer"]] + ", upsampled bilinearly"),
}


def get_method(name: str) -> Method:
    """The registered method ``name``; a :class:`KDCoreError` naming the choices for any other name."""
    if name not in METHODS:
        raise KDCoreError(f"unknown explanation method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


def explain(model: nn.Module, x: torch.Tensor, target: Target = None, method: str = "lrp",
            **settings: str) -> torch.Tensor:
    """Heatmaps ``(B, H, W)`` at input size for ``x`` ``(B, C, H, W)``; ``target`` None = the predicted class.

    ``settings`` override the method's defaults (:attr:`Method.options`), e.g. ``composite="epsilon-plus-flat"``
    for LRP or ``layer="last"`` for Grad-CAM.

    LRP maps are signed relevance summing to the target logit (up to the biases' share); Grad-CAM maps are >= 0.
    The model is evaluated in eval mode and left as it was (mode, hooks, weights, ``.grad``).
    """
    entry = get_method(method)
    return entry.fn(model, x, target, **entry.resolve(settings)).detach()


#: The maps a loss compares, teacher's against student's: each method (one rule on both sides, the method's
#: settings in :data:`PAIRED_SETTINGS`), and ``"lrp0"``, gradient x input (LRP-0) on both sides.
PAIRED_MAPS = (*METHODS, "lrp0")
#: Where a loss's maps differ from the viewer's defaults: its LRP stays zennit's EpsilonPlusFlat, the rule every
#: distillation table measured (the viewer's default reads some strided layers destrided, docs/explain.md)
PAIRED_SETTINGS: dict[str, dict[str, str]] = {"lrp": {"composite": "epsilon-plus-flat"}}


def _paired_settings(method: str) -> dict[str, str]:
    return get_method(method).resolve(PAIRED_SETTINGS.get(method))


def map_rule(method: str) -> str:
    """The rule both maps of ``method`` (:data:`PAIRED_MAPS`) are made by, e.g. ``"lrp epsilon-plus-flat"``."""
    if method == "lrp0":
        return "lrp0 (gradient x input)"
    return " ".join([method, *_paired_settings(method).values()])


def teacher_map(model: nn.Module, x: torch.Tensor, target: Target = None, method: str = "lrp") -> torch.Tensor:
    """The detached map ``(B, H, W)`` a loss compares a student's :func:`student_map` with (same rule)."""
    if method == "lrp0":
        return gradient_x_input(model, x, target).detach()
    return explain(model, x, target, method, **_paired_settings(method))


def student_map(model: nn.Module, x: torch.Tensor, target: Target = None, method: str = "lrp") -> torch.Tensor:
    """A map ``(B, H, W)`` for input ``(B, C, H, W)`` whose gradient reaches every parameter of ``model``: the
    method's differentiable map under its :data:`PAIRED_SETTINGS` (the rule of :func:`teacher_map`), or ``"lrp0"``.

    Computed in eval mode, with grouped convolutions in :class:`~kdcore.explain.grouped_conv.FastGroupedConvs`
    (a loss on the map differentiates each convolution's backward).
    """
    if method == "lrp0":
        fn = gradient_x_input
    else:
        fn = partial(get_method(method).differentiable, **_paired_settings(method))
    with FastGroupedConvs():
        return fn(model, x, target)
