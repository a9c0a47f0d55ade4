"""Teacher outputs computed once per training image (or per fixed view of it) instead of once per step.

A frozen teacher gives the same outputs for the same input every epoch; only the augmentation changes.
:func:`build_cache` runs the teacher once over

- the *un-augmented* training images, at the teacher's own resolution, keeping the logits ``(N, K)`` and the
  target-class map ``(N, m, m)``; during training a cached map is warped with the batch's augmentation ``theta``
  (:func:`cached_maps`), so it stays aligned with the augmented input; or
- with :class:`Views`, the ``V`` fixed augmentations of each image that training draws from
  (``TrainConfig.views``), each made as a training step makes it but at the teacher's own resolution (the student
  sees the same view at its own): logits, maps and features (``(N V, ...)``, row ``i V + v``), exact for that view,
  at the cost of ``V`` teacher passes per image.

The cache is stored in ``$KDCORE_CACHE/teacher/`` under a key made of the teacher's weights, the images and the
settings, so runs that share a teacher share it. ``docs/distill.md`` gives the measured distance between these
shortcuts and per-step teacher outputs.
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

from kdcore.data.augment import AugmentConfig, augment_batch, to_input, warp
from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.explain import map_rule, resize_maps, teacher_map
from kdcore.models import hash_weights
from kdcore.paths import cache_dir

CACHE_VERSION = "2"


@dataclass(frozen=True)
class Views:
    """The fixed augmentations training draws from: ``params`` ``(N, V, AUGMENT_PARAMS)`` under ``augment``."""

    params: torch.Tensor
    augment: AugmentConfig

    @property
    def count(self) -> int:
        return self.params.shape[1]


@dataclass
class TeacherCache:
    """Teacher outputs by row: ``logits`` ``(R, K)``, ``maps`` ``(R, m, m)`` and ``features`` ``(R, C, h, w)`` (each
    None when not needed; features as float16). Without ``views`` a row is an un-augmented training image (its map
    is warped per batch); with them, row ``i V + v`` is image ``i`` under ``views.params[i, v]``."""

    logits: torch.Tensor
    maps: torch.Tensor | None = None
    features: torch.Tensor | None = None
    views: Views | None = None


def cache_key(teacher: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, method: str | None, map_size: int,
              features: bool = False, views: Views | None = None) -> str:
    """A digest of the teacher's weights, the images and labels, the map settings and the views."""
    rule = map_rule(method) if method else None
    h = hashlib.sha1(f"{CACHE_VERSION}|{method}|{rule}|{map_size}|{features}|{tuple(pixels.shape)}".encode())
    hash_weights(h, teacher)
    h.update(pixels.cpu().contiguous().numpy().tobytes())
    h.update(labels.cpu().numpy().tobytes())
    if views is not None:
        h.update(f"{views.augment}".encode())
        h.update(views.params.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_maps(teacher: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, map_size: int) -> torch.Tensor:
    """The teacher's explanation of ``target`` for ``x`` ``(B, C, S, S)``, pooled to ``(B, map_size, map_size)``."""
    maps = teacher_map(teacher, x, target, method).float()
    return resize_maps(maps, (map_size, map_size))


def _inputs(pixels: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, spec: InputSpec,
            views: Views | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's input ``(B, C, S, S)`` and label ``(B,)`` of cache ``rows`` ``(B,)``."""
    if views is None:
        return to_input(pixels[rows], spec), labels[rows]
    img, v = rows // views.count, rows % views.count
    x, _ = augment_batch(pixels[img], spec, views.augment, torch.Generator(), views.params[img, v])
    return x, labels[img]


def build_cache(
    teacher: nn.Module,
    spec: InputSpec,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    method: str | None,
    map_size: int = 32,
    batch: int = 64,
    stop: threading.Event | None = None,
    features: bool = False,
    views: Views | None = None,
) -> Generator[dict, None, TeacherCache | None]:
    """Yield ``{"event": "cache", "done", "total"}`` while computing; return the cache (None when stopped).

    ``pixels`` uint8 ``(N, S, S)`` at the teacher's resolution ``spec.size``; ``method`` None skips the maps;
    ``features`` keeps ``forward_features`` (only with ``views``: the features of an un-augmented image cannot stand
    in for an augmented one's).
    """
    if pixels.shape[-1] != spec.size:
        raise KDCoreError(f"teacher cache: images are {pixels.shape[-1]} px, the teacher takes {spec.size} px")
    if features and views is None:
        raise KDCoreError("teacher cache: features are cached only for fixed views (TrainConfig.views)")
    key = cache_key(teacher, pixels, labels, method, map_size, features, views)
    path = cache_dir() / "teacher" / f"{key}.safetensors"
    total = len(pixels) * (1 if views is None else views.count)
    if path.is_file():
        saved = load_file(str(path))
        yield {"event": "cache", "done": total, "total": total, "cached": True}
        return TeacherCache(saved["logits"], saved.get("maps"), saved.get("features"), views)
    dev = next(teacher.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"logits": [], "maps": [], "features": []}
    for i in range(0, total, batch):
        if stop is not None and stop.is_set():
            return None
        x, y = _inputs(pixels, labels, torch.arange(i, min(i + batch, total)), spec, views)
        x, y = x.to(dev), y.to(dev)
        with torch.no_grad():
            feats = teacher.forward_features(x)
            out["logits"].append(teacher.forward_head(feats).float().cpu())
        if features:
            out["features"].append(feats.half().cpu())
        if method is not None:
            out["maps"].append(teacher_maps(teacher, x, y, method, map_size).cpu())
        yield {"event": "cache", "done": min(i + batch, total), "total": total, "cached": False}
    tensors = {k: torch.cat(v) for k, v in out.items() if v}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return TeacherCache(tensors["logits"], tensors.get("maps"), tensors.get("features"), views)


def cached_maps(maps: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
    """Cached maps ``(B, m, m)`` moved with the batch's augmentation ``theta`` ``(B, 2, 3)`` -> ``(B, m, m)``."""
    if theta is None:
        return maps
    return warp(maps.unsqueeze(1), theta.to(maps.device)).squeeze(1)
