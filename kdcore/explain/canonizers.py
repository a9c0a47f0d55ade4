"""Canonizers that put timm (and torchvision) CNNs into a form zennit's LRP rules apply to.

zennit attaches rules to modules, but three things in these networks are plain tensor operations in ``forward``:

* residual sums, written ``x + shortcut`` (timm EfficientNet/MobileNet/RegNet blocks) or ``x += shortcut``
  (timm and torchvision ResNet blocks, GhostNet), with the activation after the sum in ResNets;
* squeeze-excitation gates, ``x * gate(x_se)`` with a sigmoid or hard-sigmoid gate;
* BatchNorm, which timm often fuses with its activation in ``BatchNormAct2d`` (a ``BatchNorm2d`` subclass whose
  ``act`` child runs after the normalisation).

Rather than rewriting the ``forward`` of every block class (which would copy timm's code for each family and
break with its next release), :class:`SkipGateCanonizer` watches the operations of one forward pass:

* a sum of two tensors of the same shape is a residual sum: relevance is split in proportion to the summands,
  exactly zennit's ``Norm`` rule on its ``Sum`` layer (what ``zennit.torchvision.ResNetCanonizer`` inserts);
* a product with the output of a sigmoid/hard-sigmoid is a gate: all relevance goes to the gated signal, none to
  the gate (the signal-take-all rule for multiplicative gates, Arras et al. 2017), so relevance is conserved.

BatchNorm is folded into the preceding convolution by :class:`MergeBatchNormAct`, zennit's
``SequentialMergeBatchNorm`` extended to treat a ``BatchNormAct2d`` as one layer (zennit's own version only looks
at leaf modules, and ``BatchNormAct2d`` is not a leaf); the merged ``BatchNormAct2d`` is then the identity followed
by its activation, and the composite passes relevance through it.
Both canonizers restore the model exactly on ``remove()``.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.core import stabilize
from zennit.types import BatchNorm

#: zennit's default stabiliser for the ``Norm`` rule.
STABILIZER = 1e-6

# ``a + b`` arrives as ``Tensor.add`` and ``a += b`` as ``Tensor.add_``; the handler returns a new tensor, which the
# ``+=`` statement rebinds (a bare ``a.add_(b)`` used for its side effect would be missed; no supported model has one)
_SUMS = {torch.add, torch.Tensor.add, torch.Tensor.add_}
_PRODUCTS = {torch.mul, torch.Tensor.mul}
_GATES = {torch.sigmoid, torch.Tensor.sigmoid, F.hardsigmoid}


def _layers(module: nn.Module) -> list[nn.Module]:
    """Leaf modules in registration order, with every BatchNorm (``BatchNormAct2d`` included) counted as a leaf."""
    children = list(module.children())
    if isinstance(module, BatchNorm) or not children:
        return [module]
    return [layer for child in children for layer in _layers(child)]


class MergeBatchNormAct(SequentialMergeBatchNorm):
    """Fold each BatchNorm (plain or ``BatchNormAct2d``) into the convolution registered right before it.

    zennit leaves the folded BatchNorm computing ``x / sqrt(1 + eps)``; here its variance is set to ``1 - eps`` so it
    is exactly the identity and the canonized model computes what the original does.
    """

    @staticmethod
    def merge_batch_norm(modules, batch_norm):
        SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data.fill_(1.0 - batch_norm.eps)

    def apply(self, root_module: nn.Module) -> list[MergeBatchNormAct]:
        layers = _layers(root_module)
        instances = []
        for previous, layer in pairwise(layers):
            if isinstance(previous, self.linear_type) and isinstance(layer, self.batch_norm_type):
                instance = self.copy()
                instance.register((previous,), layer)
                instances.append(instance)
        return instances


class _ResidualSum(torch.autograd.Function):
    """``a + b``; backward sends relevance ``R * a / (a + b)`` to ``a`` and ``R * b / (a + b)`` to ``b``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, stabilizer: float) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        ctx.stabilizer = stabilizer
        return a + b

    @staticmethod
    def backward(ctx, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        a, b = ctx.saved_tensors
        ratio = relevance / stabilize(a + b, ctx.stabilizer)
        return a * ratio, b * ratio, None


class _Gate(torch.autograd.Function):
    """``signal * gate`` with a detached gate; backward passes all relevance to ``signal``."""

    @staticmethod
    def forward(ctx, signal: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return signal * gate

    @staticmethod
    def backward(ctx, relevance: torch.Tensor) -> tuple[torch.Tensor, None]:
        return relevance, None


class _SkipGateMode(TorchFunctionMode):
    """Routes residual sums and gate products of one forward pass through :class:`_ResidualSum` / :class:`_Gate`."""

    def __init__(self, stabilizer: float) -> None:
        super().__init__()
        self.stabilizer = stabilizer
        self.gates: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not kwargs and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args):
            a, b = args
            if func in _SUMS and a.shape == b.shape and a.dim() > 1:
                return _ResidualSum.apply(a, b, self.stabilizer)
            if func in _PRODUCTS and any(b is g for g in self.gates):
                return _Gate.apply(a, b.detach())
            if func in _PRODUCTS and any(a is g for g in self.gates):
                return _Gate.apply(b, a.detach())
        out = func(*args, **kwargs)
        if func in _GATES:
            self.gates.append(out)
        return out


class SkipGateCanonizer(Canonizer):
    """Canonizer for residual sums and squeeze-excitation gates written as tensor operations (see module doc)."""

    def __init__(self, stabilizer: float = STABILIZER) -> None:
        self.stabilizer = stabilizer
        self.module: nn.Module | None = None
        self.own_forward = None

    def copy(self) -> SkipGateCanonizer:
        return SkipGateCanonizer(self.stabilizer)

    def apply(self, root_module: nn.Module) -> list[SkipGateCanonizer]:
        instance = self.copy()
        instance.register(root_module)
        return [instance]

    def register(self, module: nn.Module) -> None:
        self.module = module
        self.own_forward = module.__dict__.get("forward")
        forward = module.forward

        def canonized_forward(*args, **kwargs):
            with _SkipGateMode(self.stabilizer):
                return forward(*args, **kwargs)

        module.forward = canonized_forward

    def remove(self) -> None:
        if self.own_forward is None:
            del self.module.forward
        else:
            self.module.forward = self.own_forward


def timm_canonizers(stabilizer: float = STABILIZER) -> list[Canonizer]:
    """The canonizers kdcore's LRP applies, in order: BatchNorm folding, then residual sums and gates."""
    return [MergeBatchNormAct(), SkipGateCanonizer(stabilizer)]
