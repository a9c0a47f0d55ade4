"""Out-of-distribution check: does an image look like the brain-MRI slices a model was trained on?

Two in-distribution scores per image, both "higher = less like the training data":

- ``energy``: ``-T * logsumexp(z / T)`` of the calibrated logits ``z`` (Liu et al., 2020);
- ``mahalanobis``: the smallest Mahalanobis distance to a class mean of the features of every stage, each
  globally average-pooled and concatenated (the last stage's are the penultimate features), with class means and
  one shared covariance fitted on the TRAIN split (Lee et al., 2018). The earlier stages see what the last one
  pools away: blank images, gradients and charts sit far from every class there.

:func:`fit_ood` measures both against :func:`synthetic_ood` (images nobody would call a brain MRI slice) and keeps
the one with the higher AUROC; its threshold is the validation split's 98th percentile, so at most 2% of
validation images are flagged. The choice and threshold sit in ``config.json`` under ``"kdcore": {"ood": {...}}``;
the Mahalanobis statistics (too big for JSON) in :data:`OOD_FILE` beside the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models.calibration import temperature
from kdcore.models.folder import ModelInfo

OOD_FILE = "ood.safetensors"
OOD_SCORES = ("energy", "mahalanobis")
#: Share of validation images the threshold lets through: at most 2% are flagged.
VAL_QUANTILE = 0.98


@dataclass
class OODCheck:
    """One image's verdict: flagged when ``score > threshold``."""

    score: float
    threshold: float
    kind: str  # which score: "energy" or "mahalanobis"

    @property
    def flagged(self) -> bool:
        return self.score > self.threshold

    def why(self) -> str:
        """One line: the score against the threshold."""
        rel = ">" if self.flagged else "<="
        return f"{self.kind} score {self.score:.1f} {rel} threshold {self.threshold:.1f}"


def _forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, K)`` and the average-pooled features of every stage, concatenated ``(B, D)``, in one pass."""
    try:
        final, stages = model.forward_intermediates(x)
    except (AttributeError, NotImplementedError):  # a model without intermediates: the penultimate features only
        final = model.forward_features(x)
        stages = [final]
    return model.forward_head(final), torch.cat([f.float().mean((2, 3)) for f in stages], 1)


@torch.no_grad()
def logits_and_features(model: nn.Module, pixels: torch.Tensor, spec: InputSpec,
                        batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` and pooled features of every stage ``(N, D)`` (float32, CPU) of uint8 ``(N, S, S)``."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    logits, feats = [], []
    for i in range(0, len(pixels), batch):
        z, f = _forward(model, to_input(pixels[i : i + batch].to(dev), spec))
        logits.append(z.float().cpu())
        feats.append(f.cpu())
    model.train(was)
    return torch.cat(logits), torch.cat(feats)


def fit_gaussian(feats: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Class means ``(K, D)`` and the precision ``(D, D)`` of one covariance shared by the classes."""
    f = feats.double()
    means = torch.stack([f[labels == c].mean(0) for c in range(k)])
    centred = f - means[labels]
    cov = centred.T @ centred / len(f)
    cov += 1e-6 * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    return {"means": means.float(), "precision": torch.linalg.pinv(cov, hermitian=True).float()}


def scores(kind: str, logits: torch.Tensor, feats: torch.Tensor | None, t: float = 1.0,
           stats: dict[str, torch.Tensor] | None = None) -> np.ndarray:
    """OOD scores ``(N,)`` (higher = less in-distribution) of logits ``(N, K)`` / features ``(N, D)``."""
    if kind == "energy":
        return (-t * torch.logsumexp(logits.double() / t, 1)).numpy()
    if kind == "mahalanobis":
        d = feats.double()[:, None, :] - stats["means"].double()[None]  # (N, K, D)
        m = torch.einsum("nkd,de,nke->nk", d, stats["precision"].double(), d)
        return m.min(1).values.sqrt().numpy()
    raise KDCoreError(f"unknown OOD score {kind!r} (one of {', '.join(OOD_SCORES)})")


def load_stats(info: ModelInfo) -> dict[str, torch.Tensor] | None:
    """The model's Mahalanobis statistics, None when its check does not need them."""
    name = info.ood.get("stats")
    if not name:
        return None
    path = Path(info.path or "") / name
    if not path.is_file():
        raise KDCoreError(f"{info.path}: {name} is missing (run `python -m kdcore calibrate` again)")
    return load_file(str(path))


def check(model: nn.Module, info: ModelInfo, pixels: np.ndarray,
          stats: dict[str, torch.Tensor] | None = None) -> OODCheck | None:
    """The OOD verdict on one decoded slice ``(S, S)`` uint8, None when the model has no fitted check."""
    if not info.ood:
        return None
    logits, feats = logits_and_features(model, torch.tensor(pixels)[None], info.spec)
    kind = info.ood["score"]
    stats = stats if stats is not None else load_stats(info)
    score = float(scores(kind, logits, feats, temperature(info), stats)[0])
    return OODCheck(score, float(info.ood["threshold"]), kind)


def save_stats(folder: str | os.PathLike, stats: dict[str, torch.Tensor]) -> None:
    """Write (or, for an empty ``stats``, remove) the folder's :data:`OOD_FILE`."""
    from safetensors.torch import save_file

    path = Path(folder) / OOD_FILE
    if stats:
        save_file({k: v.contiguous() for k, v in stats.items()}, str(path))
        path.chmod(0o644)  # safetensors writes 0600; the file ships like the weights beside it
    else:
        path.unlink(missing_ok=True)


# --- the synthetic OOD set ---------------------------------------------------------------------------------------
WORDS = ("report", "patient", "invoice", "kdcore", "hello world", "0123456789", "lorem ipsum", "brain", "MRI")


def _text(rng: np.random.Generator, size: int) -> np.ndarray:
    """A few words rendered with PIL, light on dark or dark on light."""
    bg, fg = (0, 255) if rng.random() < 0.5 else (255, 0)
    img = Image.new("L", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 5)):
        font = ImageFont.load_default(size=int(rng.integers(size // 12, size // 4)))
        xy = (int(rng.integers(0, size // 2)), int(rng.integers(0, size - size // 8)))
        draw.text(xy, str(rng.choice(WORDS)), fill=fg, font=font)
    return np.asarray(img)


def synthetic_ood(mri: torch.Tensor, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images no one would call a brain MRI slice: kind -> uint8 ``(n, S, S)``, from MRI slices ``(M, S, S)``.

    Kinds: uniform ``noise``, ``blank`` (one grey level), linear ``gradient`` at a random angle, PIL ``text``
    renders, and ``inverted`` MRI slices (255 - pixels).
    """
    rng = np.random.default_rng(seed)
    size = mri.shape[-1]
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    angles = rng.uniform(0, 2 * np.pi, n)
    grads = np.stack([np.cos(a) * xx + np.sin(a) * yy for a in angles])
    grads = (grads - grads.min((1, 2), keepdims=True)) / np.ptp(grads, (1, 2), keepdims=True)
    pick = torch.from_numpy(rng.choice(len(mri), n, replace=len(mri) < n))
    sets = {
        "noise": rng.integers(0, 256, (n, size, size)),
        "blank": np.broadcast_to(rng.integers(0, 256, (n, 1, 1)), (n, size, size)),
        "gradient": np.round(grads * 255),
        "text": np.stack([_text(rng, size) for _ in range(n)]),
        "inverted": 255 - mri[pick].numpy(),
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.uint8)) for k, v in sets.items()}
