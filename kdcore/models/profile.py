"""Cost of a model on this machine: parameters, FLOPs and batch-1 latency."""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdcore.data.imageio import InputSpec
from kdcore.models.folder import count_params


def count_flops(model: nn.Module, spec: InputSpec) -> int:
    """Floating-point operations (multiply and add counted separately) of one ``(1, C, S, S)`` forward pass."""
    x = torch.zeros(1, spec.channels, spec.size, spec.size, device=next(model.parameters()).device)
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency_ms(model: nn.Module, spec: InputSpec, repeats: int = 30, warmup: int = 5, batch: int = 1) -> float:
    """Median wall time (ms) of an eval-mode forward pass of a ``(batch, C, S, S)`` input.

    ``model`` may also be any other callable on such a tensor (e.g. a :class:`kdcore.models.runtime.OnnxRunner`).
    """
    params = next(model.parameters()) if isinstance(model, nn.Module) else None
    x = torch.randn(batch, spec.channels, spec.size, spec.size, device=params.device if params is not None else "cpu")
    was = getattr(model, "training", False)
    if was:
        model.eval()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t) * 1000)
    if was:
        model.train(was)
    return statistics.median(times)


def model_cost(model: nn.Module, spec: InputSpec, repeats: int = 30) -> dict:
    """``{"params", "flops", "latency_ms_batch1", "threads"}``."""
    return {"params": count_params(model), "flops": count_flops(model, spec),
            "latency_ms_batch1": latency_ms(model, spec, repeats), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
