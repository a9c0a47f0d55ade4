"""LRP heatmaps with zennit: a registry of named composites on canonized timm/torchvision CNNs, in eval mode.

Every composite (:data:`COMPOSITES`) uses the timm canonizers and these rules:

* first convolution: **flat** (relevance spread evenly over the receptive field; input values are normalised
  intensities with no meaningful sign, so a rule that weighs by the input would mostly follow the background);
* other convolutions: **z+** (positive contributions only: stable, conserving, no cancellation noise);
* linear classifier: **epsilon** (``eps = 1e-6``: the logit is explained as it is, negative evidence included);
* activations (ReLU, ReLU6, Hardswish, SiLU) and merged BatchNorm: **pass**; residual sums and average pooling:
  **norm** (split in proportion to the summands); max pooling: winner takes all (its gradient).

``epsilon-plus-flat`` is zennit's ``EpsilonPlusFlat`` as is. A strided layer reads its input unevenly (a 1x1
stride-2 shortcut reads one pixel in four, a 3x3 stride-2 convolution reads odd rows twice as often as even ones),
and z+ and flat pile relevance where it reads; stacked over the network's strides this draws a lattice with the
period of the total stride (16 and 32 px on a ResNet). The destrided composites read some strided convolutions as
the same convolution at stride 1 whose outputs are summed over each ``stride x stride`` cell
(:func:`destrided_relevance`, :data:`DESTRIDING`): ``epsilon-plus-flat-destrided-shortcuts-stem`` (the default) the
1x1 strided convolutions (ResNet downsampling shortcuts) and the first layer, the lattice's main sources at the
least cost in localisation; ``epsilon-plus-flat-destrided`` every strided convolution;
``epsilon-plus-flat-destrided-but-last`` every one but the 3x3 and larger convolutions of the last downsampling
(those that read the coarsest grid: on a ResNet at 128 px, one stride cell there spans 32 px of the input).

The explained quantity is the target logit: the input relevance sums to it when biases are zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

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
                        stabilizer: Callable[[torch.Tensor], torch.Tensor],
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """Input relevance ``(B, C, H, W)`` of a strided convolution for the rule ``R_i = x_i sum_j w_ij R_j / z_j``
    (``x``, ``weight``, ``bias`` the rule's modified input, weights and bias), the layer read as a stride-1
    convolution whose outputs are summed over each ``s x s`` cell.

    Output ``j`` of the strided layer owns the cell of stride-1 outputs ``s j .. s j + s - 1``; its relevance is
    shared by their contributions, ``R_i = x_i sum_cells w_ij R_cell / z_cell``. Every input pixel is then read as
    often as its neighbours (a 1x1 stride-2 shortcut no longer reads one pixel in four, a 3x3 stride-2 convolution
    no longer reads odd rows twice as often as even ones). Each stride-1 output carries the bias, so a cell's bias
    absorbs the share of its relevance that the layer's own rule gives the bias; with no bias the rule is
    conservative wherever the cell's ``z`` is non-zero.
    """
    sh, sw = module.stride
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        z = F.conv2d(x, weight, None, 1, module.padding, module.dilation, module.groups)
    (oh, ow), (h, w) = relevance.shape[-2:], z.shape[-2:]
    shift = 0 if bias is None else bias.detach()[:, None, None]
    cells = F.pad(z.detach() + shift, (0, ow * sw - w, 0, oh * sh - h)).unflatten(-1, (ow, sw)).unflatten(-3, (oh, sh))
    ratio = relevance / stabilizer(cells.sum((-1, -3)))
    spread = ratio.repeat_interleave(sh, -2).repeat_interleave(sw, -1)[..., :h, :w]
    (grad,) = torch.autograd.grad(z, x, grad_outputs=spread)
    return x * grad


def destridable(module: nn.Module) -> bool:
    """Whether a destrided rule can read ``module``: a strided convolution with zero padding."""
    return isinstance(module, nn.Conv2d) and tuple(module.stride) != (1, 1) and module.padding_mode == "zeros"


def always(module: nn.Module) -> bool:
    """Every strided convolution (a :class:`Destriding` predicate)."""
    return True


def never(module: nn.Module) -> bool:
    """No strided convolution (a :class:`Destriding` predicate)."""
    return False


def one_by_one(module: nn.Module) -> bool:
    """Whether ``module`` is a 1x1 convolution (a ResNet downsampling shortcut, when strided)."""
    return tuple(module.kernel_size) == (1, 1)


def _last_downsampling(module: nn.Module, grids: dict[nn.Module, int]) -> bool:
    """Whether ``module`` reads the coarsest grid (``grids``: each strided convolution's input area in one pass)."""
    return grids[module] == min(grids.values())


@dataclass(frozen=True)
class Destriding:
    """Which strided convolutions a composite reads destrided (:func:`destrided_relevance`)."""

    stem: bool  #: the first layer (flat rule)
    layers: Callable[[nn.Module], bool]  #: which other strided convolutions before the last downsampling (z+ rule)
    last: Callable[[nn.Module], bool]  #: which of those at the last downsampling (that read the coarsest grid)

    def chooses(self, module: nn.Module, grids: dict[nn.Module, int]) -> bool:
        """Whether the z+ layer ``module`` is read destrided; ``grids`` as :func:`_last_downsampling` takes it."""
        return destridable(module) and (self.last if _last_downsampling(module, grids) else self.layers)(module)


class DestridedZPlus(NonNegativeZPlus):
    """z+ with the strided convolutions ``destriding`` chooses read as stride 1 then subsampling
    (:func:`destrided_relevance`), the positive bias in ``z`` as zennit's z+ has it. The copies for one model share
    ``grids``, where each strided convolution records its input's area in the forward pass."""

    def __init__(self, destriding: Destriding, grids: dict[nn.Module, int] | None = None,
                 stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        self.destriding, self.grids = destriding, {} if grids is None else grids

    def forward(self, module, input, output):
        super().forward(module, input, output)
        if destridable(module):
            self.grids[module] = input[0].shape[-2] * input[0].shape[-1]

    def backward(self, module, grad_input, grad_output):
        stored = self.stored_tensors["input"][0]
        if not self.destriding.chooses(module, self.grids) or bool((stored < 0).any()):
            return super().backward(module, grad_input, grad_output)
        bias = None if module.bias is None else module.bias.clamp_min(0)
        out = destrided_relevance(module, stored, module.weight.clamp_min(0), grad_output[0], self.stabilizer, bias)
        return tuple(out if original.shape == out.shape else None for original in grad_input)

    def copy(self) -> DestridedZPlus:
        return type(self)(self.destriding, self.grids, self.stabilizer)


class DestridedFlat(Flat):
    """The flat rule with a strided first convolution read as stride 1 then subsampling."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer=stabilizer)
        self.stabilizer = Stabilizer.ensure(stabilizer)

    def backward(self, module, grad_input, grad_output):
        if not destridable(module):
            return super().backward(module, grad_input, grad_output)
        stored = self.stored_tensors["input"][0]
        out = destrided_relevance(module, torch.ones_like(stored), torch.ones_like(module.weight), grad_output[0],
                                  self.stabilizer)
        return tuple(out if original.shape == out.shape else None for original in grad_input)

    def copy(self) -> DestridedFlat:
        return type(self)(self.stabilizer)


class _DestridedEpsilonPlusFlat(EpsilonPlusFlat):
    """zennit's EpsilonPlusFlat whose z+ rule copies share one ``grids`` dict, emptied at each registration so
    that a composite reused on another model reads that model's grids only."""

    def __init__(self, destriding: Destriding) -> None:
        self.grids: dict[nn.Module, int] = {}
        super().__init__(layer_map=[(Convolution, DestridedZPlus(destriding, self.grids))],
                         first_map=[(Linear, DestridedFlat() if destriding.stem else Flat())],
                         canonizers=timm_canonizers())

    def register(self, module: nn.Module) -> None:
        self.grids.clear()
        super().register(module)


def epsilon_plus_flat(destriding: Destriding = Destriding(False, never, never)) -> Composite:
    """zennit's EpsilonPlusFlat (flat first layer, z+ convolutions, epsilon classifier) with the timm canonizers,
    the strided layers ``destriding`` names read destrided."""
    return _DestridedEpsilonPlusFlat(destriding)


#: Each composite's destriding, by name; the first is the default
DESTRIDING: dict[str, Destriding] = {
    "epsilon-plus-flat-destrided-shortcuts-stem": Destriding(True, one_by_one, one_by_one),
    "epsilon-plus-flat-destrided-but-last": Destriding(True, always, one_by_one),
    "epsilon-plus-flat": Destriding(False, never, never),
    "epsilon-plus-flat-destrided": Destriding(True, always, always),
}
#: LRP composites by name: ``name -> () -> zennit Composite`` (a fresh one per call); the first is the default.
COMPOSITES: dict[str, Callable[[], Composite]] = {name: partial(epsilon_plus_flat, d) for name, d in DESTRIDING.items()}
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
