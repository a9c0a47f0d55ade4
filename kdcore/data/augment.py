"""Batched augmentation of MRI slices on tensors (CPU or GPU), with the geometry returned for reuse.

Slices keep their anatomy: small rotations, scalings and shifts, left-right flips, and brightness/contrast/gamma
jitter, all drawn from an explicit generator; optionally mixup (:func:`mix_batch`), which blends pairs of slices and
their labels into soft targets. :func:`draw_params` fixes an augmentation as eight numbers (so a
set of views can be stored and replayed); :func:`random_affine` returns the ``(B, 2, 3)`` affine so that
anything aligned with the input (e.g. a teacher's precomputed relevance map) can be warped the same way by
:func:`warp`. The input convention itself (uint8 slices to normalised model input and back) is :func:`to_input`,
:func:`normalize` and :func:`denormalize` (and :func:`adapt_input` between two models' conventions), the one place
it is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kdcore.data.imageio import InputSpec

AUGMENT_PARAMS = 8  #: uniform draws per augmented image (:func:`draw_params`)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; ``AugmentConfig(enabled=False)`` is the identity."""

    enabled: bool = True
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06
    flip_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.2


def normalize(x01: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Images in [0, 1] ``(B, 1, S, S)`` -> ``spec``'s model input ``(B, C, S, S)`` (the plane repeated ``C`` times)."""
    x = (x01 - spec.mean) / spec.std
    return x.expand(-1, spec.channels, -1, -1) if spec.channels > 1 else x


def denormalize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``spec``'s model input ``(B, C, S, S)`` -> images in [0, 1] ``(B, 1, S, S)``; inverts :func:`normalize`."""
    return x[:, :1] * spec.std + spec.mean


def adapt_input(x: torch.Tensor, src: InputSpec, dst: InputSpec) -> torch.Tensor:
    """Re-express a model input ``(B, C, S, S)`` made under ``src`` in the convention of ``dst``."""
    if src == dst:
        return x
    x01 = denormalize(x, src)
    if src.size != dst.size:
        x01 = F.interpolate(x01, size=(dst.size, dst.size), mode="bilinear", align_corners=False,
                            antialias=dst.size < src.size)
    return normalize(x01, dst)


def _unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, S, S)`` -> float ``(B, 1, S, S)`` in [0, 1]."""
    return pixels.float().div_(255.0).unsqueeze(1)


def to_input(pixels: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 ``(B, S, S)`` -> normalised float ``(B, C, S, S)`` (the greyscale plane repeated ``C`` times)."""
    return normalize(_unit(pixels), spec)


def draw_params(n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, AUGMENT_PARAMS)`` uniform draws in [0, 1) that fix one augmentation of each of ``n`` images: five for
    the geometry (:func:`random_affine`), three for the intensities (:func:`photometric`)."""
    return torch.cat([torch.rand(n, 5, generator=gen), torch.rand(n, 3, generator=gen)], 1)


def fixed_views(n: int, views: int, seed: int = 0) -> torch.Tensor:
    """The draws ``(n, views, AUGMENT_PARAMS)`` of ``views`` fixed augmentations per image, the same for every run
    (from ``seed``): training with ``TrainConfig.views`` shows each image as one of them."""
    return draw_params(n * views, torch.Generator().manual_seed(seed)).view(n, views, AUGMENT_PARAMS)


def random_affine(u: torch.Tensor, cfg: AugmentConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """Draws ``u`` ``(n, >= 5)`` -> ``(n, 2, 3)`` affine matrices for ``F.affine_grid`` (output -> input coordinates,
    in [-1, 1])."""
    angle = (u[:, 0] * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = cfg.scale[0] + u[:, 1] * (cfg.scale[1] - cfg.scale[0])
    tx, ty = (u[:, 2] * 2 - 1) * cfg.translate * 2, (u[:, 3] * 2 - 1) * cfg.translate * 2
    flip = torch.where(u[:, 4] < cfg.flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    return theta.to(device, non_blocking=True)  # no wait on the device's queue


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, 2, 3)`` affines to ``(B, C, H, W)``; outside pixels become 0 (black for [0, 1] images)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def photometric(x01: torch.Tensor, cfg: AugmentConfig, u: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and gamma jitter of images in [0, 1], ``(B, 1, H, W)``, from the draws ``u`` ``(B, 3)``."""
    n = x01.shape[0]
    u = u.to(x01.device, non_blocking=True).view(n, 3, 1, 1)
    gamma = torch.exp((u[:, 2:3] * 2 - 1) * cfg.gamma)
    x = x01.clamp(0, 1).pow(gamma)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * (1 + (u[:, 1:2] * 2 - 1) * cfg.contrast) + mean
    return (x + (u[:, 0:1] * 2 - 1) * cfg.brightness).clamp(0, 1)


def augment_batch(
    pixels: torch.Tensor, spec: InputSpec, cfg: AugmentConfig, gen: torch.Generator, params: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 ``(B, S, S)`` -> (normalised ``(B, C, S, S)`` model input, the ``(B, 2, 3)`` affine or None).

    ``params`` ``(B, AUGMENT_PARAMS)`` fixes the augmentation (:func:`draw_params`); else it is drawn from ``gen``.
    """
    if not cfg.enabled:
        return to_input(pixels, spec), None
    x = _unit(pixels)
    u = draw_params(len(x), gen) if params is None else params
    theta = random_affine(u, cfg, x.device)
    return normalize(photometric(warp(x, theta), cfg, u[:, 5:]), spec), theta


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): ``x (B, C, S, S)``, labels ``y (B,)`` -> mixed inputs, soft targets ``(B, K)``.

    One weight ``lam ~ Beta(alpha, alpha)`` per batch (drawn from ``gen``), each image blended with a shuffled
    partner.
    """
    lam = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=gen).to(x.device, non_blocking=True)
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]
