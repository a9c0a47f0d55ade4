"""Batched inference of a model on uint8 slices: what validation, ``evaluate`` and the benches score."""

from __future__ import annotations

import torch
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import InputSpec


@torch.no_grad()
def predict_logits(model: nn.Module, pixels: torch.Tensor, spec: InputSpec, batch: int = 256) -> torch.Tensor:
    """Logits ``(N, K)`` of an eval-mode model on uint8 ``(N, S, S)`` (float32, on the model's device)."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = [model(to_input(pixels[i : i + batch].to(dev), spec)).float() for i in range(0, len(pixels), batch)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)
