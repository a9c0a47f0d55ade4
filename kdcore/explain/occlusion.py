"""Occlusion check, independent of any map: does hiding the tumour box hurt the prediction more than hiding an
equal-area box elsewhere in the head?

The control box has the tumour box's size, does not overlap it, lies in the head (at least 90% of its pixels above
:data:`HEAD_LEVEL`) and, among such places, has the mean intensity closest to the tumour box's (so that both remove
about as much signal). Both boxes are filled with black, the background of every slice.
"""

from __future__ import annotations

import numpy as np
import torch

#: uint8 grey level above which a pixel counts as head (the background is black, JPEG noise stays below).
HEAD_LEVEL = 20
#: Least share of head pixels in a control box.
MIN_HEAD = 0.9


def box_sums(values: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Sums of ``values`` ``(H, W)`` over every ``bh x bw`` window: ``(H - bh + 1, W - bw + 1)``."""
    c = np.pad(values.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[bh:, bw:] - c[:-bh, bw:] - c[bh:, :-bw] + c[:-bh, :-bw]


def control_mask(pixels: np.ndarray, tumour: np.ndarray) -> np.ndarray | None:
    """An equal-area control box elsewhere in the head for uint8 ``pixels`` ``(S, S)`` and the tumour's bool mask
    ``(S, S)`` (a box); bool ``(S, S)``, or None when no place qualifies."""
    rows, cols = np.nonzero(tumour.any(1))[0], np.nonzero(tumour.any(0))[0]
    if not len(rows):
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    bh, bw = r1 - r0, c1 - c0
    area = bh * bw
    head = box_sums(pixels > HEAD_LEVEL, bh, bw) / area
    mean = box_sums(pixels, bh, bw) / area
    r, c = np.meshgrid(np.arange(head.shape[0]), np.arange(head.shape[1]), indexing="ij")
    apart = (r >= r1) | (r + bh <= r0) | (c >= c1) | (c + bw <= c0)
    ok = apart & (head >= MIN_HEAD)
    if not ok.any():
        return None
    cost = np.where(ok, np.abs(mean - pixels[r0:r1, c0:c1].mean()), np.inf)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)  # first minimum in row-major order
    mask = np.zeros_like(tumour)
    mask[i : i + bh, j : j + bw] = True
    return mask


@torch.no_grad()
def occlusion_drops(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, tumour: torch.Tensor,
                    control: torch.Tensor, black: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop of the target's probability ``(B,)`` when the tumour box, then the control box, is black.

    ``x`` ``(B, C, S, S)`` normalised input, masks bool ``(B, S, S)``, ``black`` the normalised value of black.
    """
    def prob(image: torch.Tensor) -> torch.Tensor:
        return model(image).softmax(1).gather(1, targets[:, None])[:, 0]

    base = prob(x)
    return (base - prob(torch.where(tumour[:, None], black, x)),
            base - prob(torch.where(control[:, None], black, x)))
