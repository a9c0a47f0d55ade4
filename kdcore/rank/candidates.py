"""The student search space: lightweight timm architectures that run well on a CPU, with their cost here.

:data:`CANDIDATES` is a literal registry (timm architecture name -> family) of greyscale, CPU-friendly CNNs from
about 0.4M to 5M parameters as 1-channel, 4-class models. :func:`candidate_table` measures each one's
parameters, FLOPs and batch-1 CPU latency and drops those over the given limits, before anything is scored.
"""

from __future__ import annotations

import torch

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models import count_params, create_model
from kdcore.models.profile import model_cost

#: timm architecture -> family, in order of parameter count (as a 1-channel, 4-class model).
CANDIDATES: dict[str, str] = {
    "lcnet_035": "LCNet",  # 0.37M
    "mobilenetv2_035": "MobileNetV2",  # 0.40M
    "mobilenetv3_small_050": "MobileNetV3-Small",  # 0.57M
    "lcnet_050": "LCNet",  # 0.60M
    "mobilenetv2_050": "MobileNetV2",  # 0.69M
    "mnasnet_050": "MnasNet",  # 0.94M
    "mobilenetv4_conv_small_050": "MobileNetV4",  # 0.96M
    "mobilenetv3_small_075": "MobileNetV3-Small",  # 1.02M
    "lcnet_075": "LCNet",  # 1.08M
    "ghostnet_050": "GhostNet",  # 1.31M
    "mobilenetv3_small_100": "MobileNetV3-Small",  # 1.52M
    "lcnet_100": "LCNet",  # 1.68M
    "mobilenetv2_100": "MobileNetV2",  # 2.23M
    "regnetx_002": "RegNetX",  # 2.32M
    "mobilenetv4_conv_small": "MobileNetV4",  # 2.50M
    "mobilenetv3_large_075": "MobileNetV3-Large",  # 2.72M
    "mnasnet_100": "MnasNet",  # 3.11M
    "efficientnet_lite0": "EfficientNet-Lite",  # 3.38M
    "ghostnet_100": "GhostNet",  # 3.91M
    "efficientnet_b0": "EfficientNet",  # 4.01M
    "mobilenetv3_large_100": "MobileNetV3-Large",  # 4.21M
    "regnetx_004": "RegNetX",  # 4.77M
    "resnet10t": "ResNet",  # 4.92M
}


def build_candidate(arch: str, num_classes: int, spec: InputSpec, seed: int = 0) -> torch.nn.Module:
    """``arch`` at timm's random initialisation drawn from ``seed``, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model(arch, num_classes, spec).eval()


def candidate_table(
    spec: InputSpec,
    names: list[str] | None = None,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
    num_classes: int = 4,
    repeats: int = 5,
) -> list[dict]:
    """``[{name, family, params, flops, latency_ms}]`` of the candidates within the limits (all registered if None).

    Latency is the median of ``repeats`` batch-1 forward passes at ``spec`` on this CPU (a quick, noisy figure).
    Names outside :data:`CANDIDATES` are accepted when timm knows them.
    """
    rows = []
    for name in names or list(CANDIDATES):
        model = build_candidate(name, num_classes, spec)
        params = count_params(model)
        if max_params is not None and params > max_params:
            continue
        cost = model_cost(model, spec, repeats=repeats)
        if max_latency_ms is not None and cost["latency_ms_batch1"] > max_latency_ms:
            continue
        rows.append({"name": name, "family": CANDIDATES.get(name, "timm"), "params": params, "flops": cost["flops"],
                     "latency_ms": round(cost["latency_ms_batch1"], 2)})
    if not rows:
        raise KDCoreError("no candidate fits the limits (max params / max latency)")
    return rows
