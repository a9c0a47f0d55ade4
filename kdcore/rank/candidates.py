"""The student search space: lightweight timm architectures that run well on a CPU, with their cost here.

:data:`CANDIDATES` is a literal registry (architecture name -> family) of greyscale, CPU-friendly CNNs from
0.08M to 5M parameters as 1-channel, 4-class models: residual (ResNet10t at widths 8-64), depthwise-mobile
(MobileNetV2/V3/V4, MnasNet, EfficientNet, LCNet, GhostNet) and grouped (RegNetX); the ResNet10t widths are
:data:`kdcore.models.factory.VARIANTS`. :func:`candidate_table` measures each one's
parameters, FLOPs and batch-1 CPU latency and drops those over the given limits, before anything is scored.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models import count_params, create_model
from kdcore.models.profile import model_cost

#: architecture (timm or a width variant) -> family, in order of parameter count (as a 1-channel, 4-class model).
CANDIDATES: dict[str, str] = {
    "resnet10t_w8": "ResNet",  # 0.08M
    "resnet10t_w12": "ResNet",  # 0.18M
    "resnet10t_w16": "ResNet",  # 0.32M
    "lcnet_035": "LCNet",  # 0.37M
    "mobilenetv2_035": "MobileNetV2",  # 0.40M
    "resnet10t_w20": "ResNet",  # 0.49M
    "mobilenetv3_small_050": "MobileNetV3-Small",  # 0.57M
    "lcnet_050": "LCNet",  # 0.60M
    "mobilenetv2_050": "MobileNetV2",  # 0.69M
    "resnet10t_w24": "ResNet",  # 0.70M
    "mnasnet_050": "MnasNet",  # 0.94M
    "mobilenetv4_conv_small_050": "MobileNetV4",  # 0.96M
    "mobilenetv3_small_075": "MobileNetV3-Small",  # 1.02M
    "lcnet_075": "LCNet",  # 1.08M
    "resnet10t_w32": "ResNet",  # 1.23M
    "ghostnet_050": "GhostNet",  # 1.31M
    "mobilenetv3_small_100": "MobileNetV3-Small",  # 1.52M
    "lcnet_100": "LCNet",  # 1.68M
    "mobilenetv2_100": "MobileNetV2",  # 2.23M
    "regnetx_002": "RegNetX",  # 2.32M
    "mobilenetv4_conv_small": "MobileNetV4",  # 2.50M
    "mobilenetv3_large_075": "MobileNetV3-Large",  # 2.72M
    "resnet10t_w48": "ResNet",  # 2.76M
    "mnasnet_100": "MnasNet",  # 3.11M
    "efficientnet_lite0": "EfficientNet-Lite",  # 3.38M
    "ghostnet_100": "GhostNet",  # 3.91M
    "efficientnet_b0": "EfficientNet",  # 4.01M
    "mobilenetv3_large_100": "MobileNetV3-Large",  # 4.21M
    "regnetx_004": "RegNetX",  # 4.77M
    "resnet10t": "ResNet",  # 4.92M
}


def build_candidate(arch: str, num_classes: int, spec: InputSpec, seed: int = 0) -> torch.nn.Module:
    """``arch`` at its random initialisation (:func:`~kdcore.models.create_model`) drawn from ``seed``, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model(arch, num_classes, spec).eval()


@lru_cache(maxsize=256)
def candidate_cost(name: str, num_classes: int, spec: InputSpec, repeats: int = 30) -> dict:
    """``{params, flops, latency_ms}`` of ``name`` at ``spec``, measured once per process: latency is the median
    of ``repeats`` warm batch-1 forward passes on this CPU, as :func:`kdcore.engine.evaluate.evaluate` measures it."""
    model = build_candidate(name, num_classes, spec)
    cost = model_cost(model, spec, repeats=repeats)
    return {"params": count_params(model), "flops": cost["flops"], "latency_ms": round(cost["latency_ms_batch1"], 2)}


def candidate_table(
    spec: InputSpec,
    names: list[str] | None = None,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
    num_classes: int = 4,
    repeats: int = 30,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """``[{name, family, params, flops, latency_ms}]`` of the candidates within the limits (all registered if None).

    Costs come from :func:`candidate_cost` (cached per candidate). Names outside :data:`CANDIDATES` are accepted
    when timm knows them. ``progress("measure", done, total)`` is called after each candidate.
    """
    rows = []
    names = names or list(CANDIDATES)
    for i, name in enumerate(names):
        cost = candidate_cost(name, num_classes, spec, repeats)
        if progress is not None:
            progress("measure", i + 1, len(names))
        if max_params is not None and cost["params"] > max_params:
            continue
        if max_latency_ms is not None and cost["latency_ms"] > max_latency_ms:
            continue
        rows.append({"name": name, "family": CANDIDATES.get(name, "timm"), **cost})
    if not rows:
        raise KDCoreError("no candidate fits the limits (max params / max latency)")
    return rows
