"""The lattice factor: how much of a map's positive mass sits on one phase of a pixel grid.

A network with total stride ``g`` can draw a lattice of period ``g`` into its maps (see :mod:`kdcore.explain.lrp`).
Pixels ``(y, x)`` fall into ``g * g`` phases ``(y mod g, x mod g)``; a map without a lattice puts about ``1 / g^2`` of
its positive mass on each. The factor is the most-loaded phase's share over ``1 / g^2``: 1 = no lattice, ``g^2`` =
all mass on one phase. Summed over a batch, so that content averages out and only the grid stays.

Content does not average out entirely: maps that gather on the middle of the head load some phases of a coarse grid
more than others with no lattice at all. :func:`layout_floor` measures that part: the factor at the odd periods one
pixel either side, which no stride of the network draws and which a lattice of any power-of-two period spreads
evenly over (a 128 px image holds only four 32 px periods, so a strong lattice at the period itself leaks into them
in part; a factor at its floor shows no lattice of its own).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lattice_factor(maps: torch.Tensor, period: int) -> float:
    """Lattice factor of maps ``(B, H, W)`` (or ``(H, W)``) for grid ``period`` px (positive part only)."""
    pos = F.relu(maps.detach().double().reshape(-1, *maps.shape[-2:])).sum(0)
    h, w = pos.shape
    pad = pos.new_zeros((h + (-h) % period, w + (-w) % period))
    pad[:h, :w] = pos
    phases = pad.reshape(pad.shape[0] // period, period, pad.shape[1] // period, period).sum((0, 2))
    total = float(phases.sum())
    return float(phases.max()) / total * period * period if total > 0 else 1.0


def layout_floor(maps: torch.Tensor, period: int) -> float:
    """The lattice factor the maps' layout alone gives near ``period``: the mean of the factors at ``period - 1``
    and ``period + 1`` px, maps ``(B, H, W)``."""
    return (lattice_factor(maps, period - 1) + lattice_factor(maps, period + 1)) / 2
