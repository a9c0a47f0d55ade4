"""Teacher outputs computed once per training image instead of once per step.

A frozen teacher gives the same logits and the same explanation map for an image every epoch; only the
augmentation changes. :func:`build_cache` runs the teacher over the *un-augmented* training images once
(at the teacher's own resolution) and keeps the logits ``(N, K)`` and the target-class map ``(N, m, m)``;
during training a cached map is warped with the batch's augmentation ``theta`` (:func:`cached_maps`), so
it stays aligned with the augmented input. The cache is stored in ``$KDCORE_CACHE/teacher/`` under a key made
of the teacher's weights, the images and the map settings, so runs that share a teacher share it.
``docs/distill.md`` gives the measured distance between these shortcuts and per-step teacher outputs.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Generator
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdcore.data.augment import to_input, warp
from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.explain import map_rule, resize_maps, teacher_map
from kdcore.models import hash_weights
from kdcore.paths import cache_dir

CACHE_VERSION = "1"


@dataclass
class TeacherCache:
    """``logits`` ``(N, K)`` and ``maps`` ``(N, m, m)`` (or None) of the un-augmented training images."""

    logits: torch.Tensor
    maps: torch.Tensor | None = None


def cache_key(teacher: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, method: str | None, map_size: int) -> str:
    """A digest of the teacher's weights, the images and labels, and the map settings."""
    rule = map_rule(method) if method else None
    h = hashlib.sha1(f"{CACHE_VERSION}|{method}|{rule}|{map_size}|{tuple(pixels.shape)}".encode())
    hash_weights(h, teacher)
    h.update(pixels.cpu().contiguous().numpy().tobytes())
    h.update(labels.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_maps(teacher: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, map_size: int) -> torch.Tensor:
    """The teacher's explanation of ``target`` for ``x`` ``(B, C, S, S)``, pooled to ``(B, map_size, map_size)``."""
    maps = teacher_map(teacher, x, target, method).float()
    return resize_maps(maps, (map_size, map_size))


def build_cache(
    teacher: nn.Module,
    spec: InputSpec,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    method: str | None,
    map_size: int = 32,
    batch: int = 64,
    stop: threading.Event | None = None,
) -> Generator[dict, None, TeacherCache | None]:
    """Yield ``{"event": "cache", "done", "total"}`` while computing; return the cache (None when stopped).

    ``pixels`` uint8 ``(N, S, S)`` at the teacher's resolution ``spec.size``; ``method`` None skips the maps.
    """
    if pixels.shape[-1] != spec.size:
        raise KDCoreError(f"teacher cache: images are {pixels.shape[-1]} px, the teacher takes {spec.size} px")
    path = cache_dir() / "teacher" / f"{cache_key(teacher, pixels, labels, method, map_size)}.safetensors"
    if path.is_file():
        saved = load_file(str(path))
        yield {"event": "cache", "done": len(pixels), "total": len(pixels), "cached": True}
        return TeacherCache(saved["logits"], saved.get("maps"))
    dev = next(teacher.parameters()).device
    logits, maps = [], []
    for i in range(0, len(pixels), batch):
        if stop is not None and stop.is_set():
            return None
        x = to_input(pixels[i : i + batch].to(dev), spec)
        y = labels[i : i + batch].to(dev)
        with torch.no_grad():
            logits.append(teacher(x).float().cpu())
        if method is not None:
            maps.append(teacher_maps(teacher, x, y, method, map_size).cpu())
        yield {"event": "cache", "done": min(i + batch, len(pixels)), "total": len(pixels), "cached": False}
    cache = TeacherCache(torch.cat(logits), torch.cat(maps) if maps else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"logits": cache.logits} | ({"maps": cache.maps} if cache.maps is not None else {}), str(tmp))
    os.replace(tmp, path)
    return cache


def cached_maps(maps: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
    """Cached maps ``(B, m, m)`` moved with the batch's augmentation ``theta`` ``(B, 2, 3)`` -> ``(B, m, m)``."""
    if theta is None:
        return maps
    return warp(maps.unsqueeze(1), theta.to(maps.device)).squeeze(1)
