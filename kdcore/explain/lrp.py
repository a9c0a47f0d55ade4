"""LRP heatmaps with zennit: a registry of named composites on canonized timm/torchvision CNNs, in eval mode.

Every composite (:data:`COMPOSITES`) uses the timm canonizers and these rules:

* first convolution: **flat** (relevance spread evenly over the receptive field; input values are normalised
  intensities with no meaningful sign, so a rule that weighs by the input would mostly follow the background);
* other convolutions: **z+** (positive contributions only: stable, conserving, no cancellation noise);
* linear classifier: **epsilon** (``eps = 1e-6``: the logit is explained as it is, negative evidence included);
* activations (ReLU, ReLU6, Hardswish, SiLU) and merged BatchNorm: **pass**; residual sums and average pooling:
  **norm** (split in proportion to the summands); max pooling: winner takes all (its gradient).

``epsilon-plus-flat`` (the default) is zennit's ``EpsilonPlusFlat`` as is. ``epsilon-plus-flat-destrided`` reads
every **strided** convolution (z+ and the first layer's flat rule) as the same convolution at stride 1 whose
outputs are summed over each ``stride x stride`` cell (:func:`destrided_relevance`). A strided layer reads its
input unevenly (a 1x1 stride-2 shortcut reads one pixel in four, a 3x3 stride-2 convolution reads odd rows twice
as often as even ones), and z+ and flat pile relevance where it reads; stacked over the network's strides this
draws a lattice with the period of the total stride (16 and 32 px on a ResNet), which the destrided rules remove.

The explained quantity is the target logit: the input relevance sums to it when biases are zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from zennit.composites import EpsilonPlusFlat
from zennit.core import Composite, ParamMod, Stabilizer
from zennit.rules import Flat, ZPlus
from zennit.types import Convolution, Linear

from kdcore.errors import KDCoreError
from kdcore.explain._common import Target, evaluating, resolve_targets, target_logits
from kdcore.explain.canonizers import timm_canonizers


class NonNegativeZPlus(ZPlus):
    """zennit's z+ rule, skipping its negative-input half when the layer's input has no negative entry.

    After a ReLU (most convolutions of a ResNet) that half is exactly zero: skipping it saves two of the four
    convolutions the rule runs per layer, with the same result.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer=stabilizer)
        self.stabilizer = Stabilizer.ensure(stabilizer)

    def backward(self, module, grad_input, grad_output):
        stored = self.stored_tensors["input"][0]
        if bool((stored < 0).any()):
            return super().backward(module, grad_input, grad_output)
        x = stored.clone().requires_grad_()
        with ParamMod.ensure(self.param_modifiers[0])(module) as positive, torch.enable_grad():
            z = positive.forward(x)
        (grad,) = torch.autograd.grad(z, x, grad_outputs=grad_output[0] / self.stabilizer(z))
        relevance = x * grad
        return tuple(relevance if original.shape == relevance.shape else None for original in grad_input)

    def copy(self) -> NonNegativeZPlus:
        return type(self)(self.stabilizer)


def destrided_relevance(module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                        stabilizer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Input relevance ``(B, C, H, W)`` of a strided convolution for the rule ``R_i = x_i sum_j w_ij R_j / z_j``
    (``x``, ``weight`` the rule's modified input and weights), the layer read as a stride-1 convolution whose
    outputs are summed over each ``s x s`` cell.

    Output ``j`` of the strided layer owns the cell of stride-1 outputs ``s j .. s j + s - 1``; its relevance is
    shared by their contributions, ``R_i = x_i sum_cells w_ij R_cell / z_cell``. Every input pixel is then read as
    often as its neighbours (a 1x1 stride-2 shortcut no longer reads one pixel in four, a 3x3 stride-2 convolution
    no longer reads odd rows twice as often as even ones). Conservative wherever the cell's ``z`` is non-zero.
    """
    sh, sw = module.stride
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        z = F.conv2d(x, weight, None, 1, module.padding, module.dilation, module.groups)
    (oh, ow), (h, w) = relevance.shape[-2:], z.shape[-2:]
    cells = F.pad(z.detach(), (0, ow * sw - w, 0, oh * sh - h)).unflatten(-1, (ow, sw)).unflatten(-3, (oh, sh))
    ratio = relevance / stabilizer(cells.sum((-1, -3)))
    spread = ratio.repeat_interleave(sh, -2).repeat_interleave(sw, -1)[..., :h, :w]
    (grad,) = torch.autograd.grad(z, x, grad_outputs=spread)
    return x * grad


def _destridable(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.stride) != (1, 1) and module.padding_mode == "zeros"


class DestridedZPlus(NonNegativeZPlus):
    """z+ with strided convolutions read as stride 1 then subsampling (:func:`destrided_relevance`)."""

    def backward(self, module, grad_input, grad_output):
        stored = self.stored_tensors["input"][0]
        if not _destridable(module) or bool((stored < 0).any()):
            return super().backward(module, grad_input, grad_output)
        out = destrided_relevance(module, stored, module.weight.clamp_min(0), grad_output[0], self.stabilizer)
        return tuple(out if original.shape == out.shape else None for original in grad_input)


class DestridedFlat(Flat):
    """The flat rule with a strided first convolution read as stride 1 then subsampling."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer=stabilizer)
        self.stabilizer = Stabilizer.ensure(stabilizer)

    def backward(self, module, grad_input, grad_output):
        if not _destridable(module):
            return super().backward(module, grad_input, grad_output)
        stored = self.stored_tensors["input"][0]
        out = destrided_relevance(module, torch.ones_like(stored), torch.ones_like(module.weight), grad_output[0],
                                  self.stabilizer)
        return tuple(out if original.shape == out.shape else None for original in grad_input)

    def copy(self) -> DestridedFlat:
        return type(self)(self.stabilizer)


def epsilon_plus_flat() -> Composite:
    """zennit's EpsilonPlusFlat (flat first layer, z+ convolutions, epsilon classifier) with the timm canonizers."""
    return EpsilonPlusFlat(layer_map=[(Convolution, NonNegativeZPlus())], canonizers=timm_canonizers())


def epsilon_plus_flat_destrided() -> Composite:
    """EpsilonPlusFlat with :class:`DestridedZPlus` on the convolutions (no stride lattice)."""
    return EpsilonPlusFlat(layer_map=[(Convolution, DestridedZPlus())], first_map=[(Linear, DestridedFlat())],
                           canonizers=timm_canonizers())


#: LRP composites by name: ``name -> () -> zennit Composite`` (a fresh one per call); the first is the default.
COMPOSITES: dict[str, Callable[[], Composite]] = {
    "epsilon-plus-flat": epsilon_plus_flat,
    "epsilon-plus-flat-destrided": epsilon_plus_flat_destrided,
}
DEFAULT_COMPOSITE = next(iter(COMPOSITES))


def lrp_composite(name: str = DEFAULT_COMPOSITE) -> Composite:
    """The registered composite ``name`` (a :class:`KDCoreError` naming the choices for any other name)."""
    if name not in COMPOSITES:
        raise KDCoreError(f"unknown LRP composite {name!r}: choose from {', '.join(COMPOSITES)}")
    return COMPOSITES[name]()


def lrp_map(model: nn.Module, x: torch.Tensor, target: Target = None,
            composite: str | Composite = DEFAULT_COMPOSITE) -> torch.Tensor:
    """Signed LRP relevance ``(B, H, W)`` for input ``(B, C, H, W)``, summed over channels.

    ``composite`` names the rules (:data:`COMPOSITES`) or is a zennit composite (e.g. one under study). The model
    is used in eval mode (BatchNorm folding needs running statistics) and is left as it was found: mode, hooks and
    weights.
    """
    rules = lrp_composite(composite) if isinstance(composite, str) else composite
    with evaluating(model), torch.enable_grad(), rules.context(model) as canonized:
        x = x.detach().requires_grad_(True)
        logits = canonized(x)
        targets = resolve_targets(logits, target)
        chosen = target_logits(logits, targets)
        start = torch.zeros_like(logits).scatter(1, targets[:, None], chosen.detach()[:, None])
        (relevance,) = torch.autograd.grad(logits, x, start)
    return relevance.sum(1)
