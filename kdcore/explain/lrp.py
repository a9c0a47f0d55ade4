"""LRP heatmaps with zennit: the EpsilonPlusFlat composite on canonized timm/torchvision CNNs, in eval mode.

Rules (zennit ``EpsilonPlusFlat``):

* first convolution: **flat** (relevance spread evenly over the receptive field; input values are normalised
  intensities with no meaningful sign, so a rule that weighs by the input would mostly follow the background);
* other convolutions: **z+** (positive contributions only: stable, conserving, no cancellation noise);
* linear classifier: **epsilon** (``eps = 1e-6``: the logit is explained as it is, negative evidence included);
* activations (ReLU, ReLU6, Hardswish, SiLU) and merged BatchNorm: **pass**; residual sums and average pooling:
  **norm** (split in proportion to the summands); max pooling: winner takes all (its gradient).

The explained quantity is the target logit: the input relevance sums to it when biases are zero.
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.composites import EpsilonPlusFlat
from zennit.core import ParamMod, Stabilizer
from zennit.rules import ZPlus
from zennit.types import Convolution

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
        return NonNegativeZPlus(self.stabilizer)


def lrp_composite() -> EpsilonPlusFlat:
    """kdcore's LRP rules (see module doc) with the timm canonizers."""
    return EpsilonPlusFlat(layer_map=[(Convolution, NonNegativeZPlus())], canonizers=timm_canonizers())


def lrp_map(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Signed LRP relevance ``(B, H, W)`` for input ``(B, C, H, W)``, summed over channels.

    The model is used in eval mode (BatchNorm folding needs running statistics) and is left as it was found:
    mode, hooks and weights.
    """
    with evaluating(model), torch.enable_grad(), lrp_composite().context(model) as canonized:
        x = x.detach().requires_grad_(True)
        logits = canonized(x)
        targets = resolve_targets(logits, target)
        chosen = target_logits(logits, targets)
        start = torch.zeros_like(logits).scatter(1, targets[:, None], chosen.detach()[:, None])
        (relevance,) = torch.autograd.grad(logits, x, start)
    return relevance.sum(1)
