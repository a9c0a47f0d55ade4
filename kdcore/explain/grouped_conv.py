"""Grouped (e.g. depthwise) convolutions with a fast second derivative, for losses on gradient-based maps.

PyTorch differentiates the backward of a grouped convolution (``create_graph=True``, then ``backward``) with one
convolution per group: a depthwise layer of 144 channels costs 144 small convolutions and as many copies, and a
MobileNet's ``sem(lrp)`` step thousands of kernel launches (22 img/s measured on a shared H100 GPU, slower than a
2-core CPU). :class:`GroupedConv2d` writes the input gradient of ``conv2d`` as one grouped ``conv_transpose2d``,
whose own backward is an ordinary grouped convolution backward, so every order of derivative stays one call per
layer. The values and the gradients are the same (checked by ``gradgradcheck`` in ``tests/test_explain.py``).

Within ``with FastGroupedConvs():`` every grouped ``conv2d`` goes through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Pair = tuple[int, int]


def _pair(v: int | tuple[int, ...]) -> Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class GroupedConv2d(torch.autograd.Function):
    """``F.conv2d(x, w, None, stride, padding, dilation, groups)`` with an input gradient that is one grouped
    ``conv_transpose2d``: x ``(B, C, H, W)``, w ``(O, C / groups, kh, kw)`` -> ``(B, O, H', W')``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int,
                ) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation, groups)
        return F.conv2d(x, w, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        gx = gw = None
        if ctx.needs_input_grad[0]:
            # conv_transpose2d maps (H', W') back to a range of sizes; output_padding picks the input's
            reached = [(grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1) + 1
                       for i in range(2)]
            extra = tuple(x.shape[2 + i] - reached[i] for i in range(2))
            gx = F.conv_transpose2d(grad, w, None, stride, padding, extra, groups, dilation)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, w.shape, grad, stride, padding, dilation, groups)
        return gx, gw, None, None, None, None


def _conv2d_args(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return x, weight, bias, stride, padding, dilation, groups


class FastGroupedConvs(TorchFunctionMode):
    """Sends ``conv2d`` calls with ``groups > 1`` and numeric padding to :class:`GroupedConv2d` (same values, fast
    double backward); a context manager."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            x, w, b, stride, padding, dilation, groups = _conv2d_args(*args, **kwargs)
            if groups > 1 and not isinstance(padding, str):
                out = GroupedConv2d.apply(x, w, _pair(stride), _pair(padding), _pair(dilation), groups)
                return out if b is None else out + b[:, None, None]
        return func(*args, **kwargs)
