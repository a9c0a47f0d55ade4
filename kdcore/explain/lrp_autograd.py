"""LRP maps written as autograd expressions of the parameters, with the same rules as a registered composite.

:func:`kdcore.explain.lrp_map` runs zennit, which builds its modified weights from ``param.data`` and folds
BatchNorm into the weights in place: its map is right, but no gradient of it reaches the parameters. Here every
rule of :data:`kdcore.explain.lrp.COMPOSITES` is the backward of a small autograd function whose own backward is
made of ordinary operations on the layer's input and its (BatchNorm-folded) parameters, so the map can be
differentiated again (``create_graph=True``) for a loss on a student's explanation. The rules, for a layer with
input ``x``, weights ``W``, bias ``b`` and output relevance ``R`` (``stab(z) = z + sign(z) 1e-6``):

* first convolution, **flat**: ``R_in = 1^T (R / stab(1 * 1))`` (ones for the input and the weights, no bias);
* other convolutions, **z+**: ``z = W+ x+ + b+ + W- x-``, ``R_in = x+ * W+^T s + x- * W-^T s``, ``s = R / stab(z)``;
* ``torch.nn.Linear``, **epsilon**: ``z = W x + b``, ``R_in = x * W^T (R / stab(z))``;
* average pooling, **norm**: the epsilon rule of the pooling; residual sums: the Norm rule of
  :class:`~kdcore.explain.canonizers.SkipGateCanonizer`; activations and BatchNorm: **pass**;
  max pooling: its gradient (winner takes all).

A convolution followed by a BatchNorm uses the folded ``W * g / sqrt(v + e)`` and ``(b - m) g / sqrt(v + e) + beta``
as functions of the parameters (what :class:`~kdcore.explain.canonizers.MergeBatchNormAct` writes in place); SE
gates pass all relevance to the gated signal, as the canonizer's. The destrided composites read the strided
convolutions :data:`kdcore.explain.lrp.DESTRIDING` names as :func:`kdcore.explain.lrp.destrided_relevance` does.
The model runs twice (:class:`_Tape`): its own forward, whose tensors the rules read (so their derivatives are the
network's), then one that carries the relevance pass. A network with a parametrised layer of any other kind is
refused with a :class:`KDCoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import _get_current_function_mode_stack
from zennit import types
from zennit.core import stabilize

from kdcore.errors import KDCoreError
from kdcore.explain._common import Target, evaluating, resolve_targets, target_logits
from kdcore.explain.canonizers import _SUMS, _layers, _SkipGateMode
from kdcore.explain.lrp import DESTRIDING, Destriding, destridable

#: stabiliser of every rule (zennit's default)
EPSILON = 1e-6

Rule = Callable[[torch.Tensor], torch.Tensor]
_PARAMETRISED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


class _Relevance(torch.autograd.Function):
    """``out`` as is; backward maps its relevance to the ``inputs``' with ``rule`` (one tensor, or one per input)."""

    @staticmethod
    def forward(ctx, rule: Callable, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.rule, ctx.device = rule, out.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device)  # backward runs the rule under the forward's autocast
        ctx.dtype = torch.get_autocast_dtype(ctx.device)
        return out.clone()

    @staticmethod
    def backward(ctx, relevance: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        with torch.autocast(ctx.device, dtype=ctx.dtype, enabled=ctx.autocast):
            shares = ctx.rule(relevance)
        return None, None, *((shares,) if isinstance(shares, torch.Tensor) else shares)


def _transpose(fn: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``A^T s`` for the linear map ``fn(x) = A x`` on tensors shaped like ``like``; differentiable in ``A``."""
    create_graph = torch.is_grad_enabled()
    leaf = torch.zeros_like(like, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fn(leaf), leaf, s, create_graph=create_graph)
    return grad


def _conv(module: nn.Conv2d, weight: torch.Tensor, stride: tuple[int, int] | None = None):
    stride = module.stride if stride is None else stride
    return lambda x: F.conv2d(x, weight, None, stride, module.padding, module.dilation, module.groups)


def _destrided(module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
               shift: torch.Tensor | float = 0) -> torch.Tensor:
    """:func:`kdcore.explain.lrp.destrided_relevance` as a differentiable expression (``shift`` the bias term of
    ``z``, ``(C_out, 1, 1)``): ``(B, C, H, W)``."""
    sh, sw = module.stride
    conv = _conv(module, weight, (1, 1))
    z = conv(x) + shift
    (oh, ow), (h, w) = relevance.shape[-2:], z.shape[-2:]
    cells = F.pad(z, (0, ow * sw - w, 0, oh * sh - h)).unflatten(-1, (ow, sw)).unflatten(-3, (oh, sh))
    ratio = relevance / stabilize(cells.sum((-1, -3)), EPSILON)
    spread = ratio.repeat_interleave(sh, -2).repeat_interleave(sw, -1)[..., :h, :w]
    return x * _transpose(conv, x, spread)


def flat_rule(module: nn.Conv2d, x: torch.Tensor, destrided: bool) -> Rule:
    """The flat rule: relevance spread evenly over each output's receptive field (no parameter involved); read
    destrided when ``destrided`` (and the layer is strided)."""
    ones, weight = torch.ones_like(x), torch.ones_like(module.weight)
    if destrided and destridable(module):
        return lambda r: _destrided(module, ones, weight, r)
    conv = _conv(module, weight)
    return lambda r: _transpose(conv, x, r / stabilize(conv(ones), EPSILON))


def zplus_rule(module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               destrided: bool) -> Rule:
    """z+ with ``weight``/``bias`` the layer's (folded) parameters; zennit's ``ZPlus`` (bias ``b+`` in ``z``); read
    destrided when ``destrided`` (:meth:`~kdcore.explain.lrp.Destriding.chooses`: a strided layer it names)."""
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)
    shift = 0 if bias is None else bias.clamp(min=0)[:, None, None]
    if not bool((x < 0).any()):
        if destrided:
            return lambda r: _destrided(module, x, pos, r, shift)
        return lambda r: x * _transpose(_conv(module, pos), x, r / stabilize(_conv(module, pos)(x) + shift, EPSILON))
    xp, xn = x.clamp(min=0), x.clamp(max=0)

    def rule(r: torch.Tensor) -> torch.Tensor:
        s = r / stabilize(_conv(module, pos)(xp) + _conv(module, neg)(xn) + shift, EPSILON)
        return xp * _transpose(_conv(module, pos), x, s) + xn * _transpose(_conv(module, neg), x, s)

    return rule


def epsilon_rule(module: nn.Linear, x: torch.Tensor) -> Rule:
    """The epsilon rule of a dense layer: ``R_in = x * W^T (R / stab(W x + b))``."""
    return lambda r: x * ((r / stabilize(F.linear(x, module.weight, module.bias), EPSILON)) @ module.weight)


def _pool(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return lambda x: F.adaptive_avg_pool2d(x, module.output_size)
    if isinstance(module, nn.AvgPool2d):
        return lambda x: F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                      module.count_include_pad, module.divisor_override)
    raise KDCoreError(f"differentiable LRP does not cover {type(module).__name__}")


def norm_rule(module: nn.Module, x: torch.Tensor) -> Rule:
    """Average pooling's share in proportion to the summands: ``R_in = x * A^T (R / stab(A x))``."""
    pool = _pool(module)
    return lambda r: x * _transpose(pool, x, r / stabilize(pool(x), EPSILON))


def _folded(model: nn.Module) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]]:
    """Each convolution's weights and bias with the BatchNorm registered right after it folded in, as expressions
    of the parameters (the convolutions without a BatchNorm keep their own)."""
    out = {}
    layers = _layers(model)
    for previous, layer in zip(layers, [*layers[1:], None]):
        if not isinstance(previous, nn.Conv2d):
            continue
        if not isinstance(layer, nn.BatchNorm2d):
            out[previous] = (previous.weight, previous.bias)
            continue
        scale = torch.rsqrt(layer.running_var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        bias = -layer.running_mean if previous.bias is None else previous.bias - layer.running_mean
        bias = bias * scale + (0 if layer.bias is None else layer.bias)
        out[previous] = (previous.weight * scale[:, None, None, None], bias)
    return out


def check_supported(model: nn.Module) -> None:
    """Raise :class:`KDCoreError` when ``model`` has a parametrised layer the rules here do not cover."""
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and not isinstance(module, _PARAMETRISED):
            raise KDCoreError(f"differentiable LRP does not cover {type(module).__name__} ({name}): "
                              "use sem map gradcam or the lrp0 rule for this student")
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise KDCoreError(f"differentiable LRP does not cover {module.padding_mode} padding ({name})")


class _Tape(_SkipGateMode):
    """The two forward passes of :func:`lrp_autograd`, as a torch function mode for the residual sums.

    The first (``replay`` False) is the model's own forward; it records the tensors the rules read: each hooked
    layer's input and the summands of each residual sum (computed out of place). The second (``replay`` True) builds
    the relevance pass: each layer's and each sum's output goes through :class:`_Relevance` with a rule that reads
    the first pass's tensors, in the same order. A rule's parameters and inputs then carry their true derivatives
    (through the first pass), while relevance flows back through the rules (through the second).
    """

    def __init__(self) -> None:
        super().__init__(EPSILON)
        self.recorded: list[tuple[torch.Tensor, ...]] = []
        self.replay = False
        self.read = 0
        # backward runs outside the caller's torch function modes (e.g. FastGroupedConvs): the rules re-enter them
        self.modes = _get_current_function_mode_stack()

    def relevance(self, rule: Callable, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """``out``, with ``rule`` (run under the caller's modes) as the backward to ``inputs``."""
        def under_modes(r: torch.Tensor):
            with ExitStack() as stack:
                for mode in self.modes:
                    stack.enter_context(mode)
                return rule(r)

        return _Relevance.apply(under_modes, out, *inputs)

    def take(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tensors`` recorded (first pass), or the first pass's in their place (second pass)."""
        if not self.replay:
            self.recorded.append(tensors)
            return tensors
        self.read += 1
        return self.recorded[self.read - 1]

    def __torch_function__(self, func, types=(), args=(), kwargs=None):
        if not kwargs and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args) and func in _SUMS \
                and args[0].shape == args[1].shape and args[0].dim() > 1:
            (a, b), out = self.take(*args), torch.add(*args)
            if not self.replay:
                return out

            def rule(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                ratio = r / stabilize(a + b, EPSILON)
                return a * ratio, b * ratio

            return self.relevance(rule, out, *args)
        if not self.replay:
            return func(*args, **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


@contextmanager
def _rules(model: nn.Module, tape: _Tape, destriding: Destriding) -> Iterator[None]:
    """Forward hooks that record (first pass) and give every layer its rule's backward (second pass)."""
    folded = _folded(model)
    first = next(m for m in model.modules() if isinstance(m, types.Linear))
    grids: dict[nn.Module, int] = {}  # each strided convolution's input area, recorded in the first pass

    def rule_for(module: nn.Module, x: torch.Tensor) -> Rule | None:
        if module is first:
            return flat_rule(module, x, destriding.stem)
        if isinstance(module, nn.Conv2d):
            return zplus_rule(module, x, *folded[module], destriding.chooses(module, grids))
        if isinstance(module, nn.Linear):
            return epsilon_rule(module, x)
        if isinstance(module, types.AvgPool):
            return norm_rule(module, x)
        return lambda r: r

    def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor | None:
        (x,) = tape.take(inputs[0])
        if not tape.replay:
            if destridable(module):
                grids[module] = x.shape[-2] * x.shape[-1]
            return None
        new = tape.relevance(rule_for(module, x), out, inputs[0])
        if any(out is gate for gate in tape.gates):  # a gate module's output stays a gate
            tape.gates.append(new)
        return new

    kinds = (types.Linear, types.AvgPool, types.Activation, types.BatchNorm)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with tape:
            yield
    finally:
        for h in handles:
            h.remove()


def lrp_autograd(model: nn.Module, x: torch.Tensor, target: Target = None,
                 composite: str = next(iter(DESTRIDING))) -> torch.Tensor:
    """The LRP map ``(B, H, W)`` of :func:`kdcore.explain.lrp_map` under ``composite`` for input ``(B, C, H, W)``,
    differentiable in the model's parameters (built with ``create_graph=True``); eval mode, model left as found."""
    if composite not in DESTRIDING:
        raise KDCoreError(f"no differentiable LRP for composite {composite!r}: choose from {', '.join(DESTRIDING)}")
    check_supported(model)
    tape = _Tape()
    with evaluating(model), torch.enable_grad(), _rules(model, tape, DESTRIDING[composite]):
        logits = model(x.detach())
        targets = resolve_targets(logits, target)
        start = torch.zeros_like(logits).scatter(1, targets[:, None], target_logits(logits, targets)[:, None])
        tape.replay = True
        x = x.detach().requires_grad_(True)
        (relevance,) = torch.autograd.grad(model(x), x, start, create_graph=True)
    return relevance.sum(1)
