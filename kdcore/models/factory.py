"""The one way to build a model: timm architectures and kdcore's width/depth variants of them."""

from __future__ import annotations

import hashlib

import timm
import torch
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from torch import nn

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError

#: Width/depth variants of timm architectures, usable wherever an architecture name is asked for. A saved variant
#: records timm's architecture and these arguments in ``config.json`` (``model_args``), so timm rebuilds it.
VARIANTS: dict[str, tuple[str, dict]] = {
    "resnet10t_w8": ("resnet10t", {"channels": (8, 16, 32, 64), "stem_width": 8}),  # 0.08M
    "resnet10t_w12c64": ("resnet10t", {"channels": (12, 24, 40, 64), "stem_width": 12}),  # 0.10M, wider early stages
    "resnet10t_w12": ("resnet10t", {"channels": (12, 24, 48, 96), "stem_width": 12}),  # 0.18M
    "resnet10t_w16": ("resnet10t", {"channels": (16, 32, 64, 128), "stem_width": 16}),  # 0.32M
    "resnet10t_w20": ("resnet10t", {"channels": (20, 40, 80, 160), "stem_width": 16}),  # 0.49M
    "resnet10t_w24": ("resnet10t", {"channels": (24, 48, 96, 192), "stem_width": 16}),  # 0.70M
    "resnet10t_w32": ("resnet10t", {"channels": (32, 64, 128, 256), "stem_width": 16}),  # 1.23M
    "resnet10t_w48": ("resnet10t", {"channels": (48, 96, 192, 384), "stem_width": 16}),  # 2.76M
}


def create_model(arch: str, num_classes: int, spec: InputSpec, **kwargs) -> nn.Module:
    """A randomly initialised timm model ``arch`` (or a :data:`VARIANTS` name) taking ``(B, spec.channels, S, S)``
    and giving ``(B, num_classes)``."""
    arch, variant_args = VARIANTS.get(arch, (arch, {}))
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=spec.channels,
                                  **(variant_args | kwargs))
    except RuntimeError as e:
        raise KDCoreError(f"unknown architecture {arch!r} ({e})") from None
    fan_in_classifier(model)
    return model


def fan_in_classifier(model: nn.Module) -> None:
    """Redraw the classifier of timm's EfficientNet-builder nets (MobileNetV2/V3/V4, LCNet, MnasNet, EfficientNet)
    with PyTorch's ``nn.Linear`` default, whose range ``1/sqrt(fan_in)`` does not depend on the number of classes.

    Their own init draws it from ``U(+-1/sqrt(num_classes))``: with 4 classes that is 16x the ImageNet range, and it
    held these nets' training back (``docs/distill.md``). Other models keep timm's init and its random draws."""
    if isinstance(model, EfficientNet | MobileNetV3):
        head = model.get_classifier()
        if isinstance(head, nn.Linear):
            head.reset_parameters()



def hash_weights(h: hashlib._Hash, model: nn.Module) -> None:
    """Feed every tensor of ``model.state_dict()`` (name and raw bytes) into the hash ``h``."""
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())



def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
