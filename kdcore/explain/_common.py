"""What every explanation method shares: the target convention, eval mode for the call, resizing maps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import KDCoreError

#: ``None`` (the predicted class), one class index for the whole batch, or one per sample ``(B,)``.
Target = None | int | torch.Tensor


def resolve_targets(logits: torch.Tensor, target: Target) -> torch.Tensor:
    """The class explained for each sample: int64 ``(B,)`` from logits ``(B, K)`` and ``target``."""
    b, k = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    t = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.shape != (b,):
        raise KDCoreError(f"target has {t.numel()} entries for a batch of {b}")
    if bool((t < 0).any() or (t >= k).any()):
        raise KDCoreError(f"target class out of range 0..{k - 1}: {t.tolist()}")
    return t


def target_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(B,)`` logit of each sample's target class."""
    return logits.gather(1, targets[:, None])[:, 0]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's own ``training`` flag."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., h, w)`` -> ``(..., H, W)``: area averages to shrink (no aliasing), else bilinear interpolation.

    A no-op at equal size; differentiable.
    """
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    flat = maps.reshape(-1, 1, h, w)
    if h >= size[0] and w >= size[1]:
        out = F.adaptive_avg_pool2d(flat, size)
    else:
        out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*maps.shape[:-2], *size)
