"""Batched inference: logits of uint8 slices (what validation, ``evaluate`` and the benches score), and predictions
for image files (what ``kdcore predict`` writes), with each file's decoding notes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kdcore.data.augment import to_input
from kdcore.data.imageio import ImageDecodeError, InputSpec, read_image, square_resize, to_grey_array
from kdcore.models import ood
from kdcore.models.calibration import calibrated_probs, temperature
from kdcore.models.folder import ModelInfo


@torch.no_grad()
def predict_logits(model: nn.Module, pixels: torch.Tensor, spec: InputSpec, batch: int = 256,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits ``(N, K)`` of an eval-mode model on uint8 ``(N, S, S)`` (float32, on the model's device);
    ``progress(done, N)`` after each batch."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(pixels), batch):
        out.append(model(to_input(pixels[i : i + batch].to(dev), spec)).float())
        if progress:
            progress(min(i + batch, len(pixels)), len(pixels))
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def _rows(model: nn.Module, info: ModelInfo, files: list[str], notes: list[dict], pixels: torch.Tensor,
          stats: dict[str, torch.Tensor] | None) -> list[dict]:
    """One row per file of a decoded batch ``(N, S, S)`` uint8 (see :func:`predict_files`)."""
    names = [str(c) for c in info.class_names]
    if info.ood:
        logits, feats = ood.logits_and_features(model, pixels, info.spec)
        scores = ood.scores(info.ood["score"], logits, feats, temperature(info), stats)
    else:
        logits, scores = predict_logits(model, pixels, info.spec).cpu(), None
    probs = logits.softmax(1).numpy()
    calibrated = calibrated_probs(logits, info).numpy() if info.calibration else None
    rows = []
    for i, (file, note) in enumerate(zip(files, notes)):
        shown = probs[i] if calibrated is None else calibrated[i]
        k = int(shown.argmax())
        rows.append({
            "file": file, "class": names[k], "confidence": float(shown[k]),
            "probs": dict(zip(names, map(float, probs[i]))),
            "calibrated_probs": None if calibrated is None else dict(zip(names, map(float, calibrated[i]))),
            "in_distribution": None if scores is None else bool(scores[i] <= info.ood["threshold"]),
            "ood_score": None if scores is None else float(scores[i]),
            **note,
        })
    return rows


def predict_files(model: nn.Module, info: ModelInfo, files: Sequence[str | os.PathLike], slice_index: int | None = None,
                  batch: int = 64, progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Predict each image file (DICOM and NIfTI included), decoded as in training, ``batch`` files at a time.

    Returns the rows and the skipped files. A row: ``file``, ``class``, ``confidence`` (of the calibrated
    probabilities when the model has a fitted temperature), ``probs`` and ``calibrated_probs`` (class -> p; the
    latter None without a temperature), ``in_distribution`` and ``ood_score`` (None without a fitted OOD check),
    and the decoding notes ``format``, ``slice``, ``slices``, ``intensity``. Unreadable files are skipped and
    listed as ``{"file", "reason"}`` (the one-line :class:`ImageDecodeError`). ``slice_index`` picks the DICOM
    frame / NIfTI axial slice.
    """
    rows, skipped = [], []
    stats = ood.load_stats(info) if info.ood else None
    names, notes, pixels = [], [], []
    for i, f in enumerate(tqdm(files, desc="predict", unit="file", disable=not progress)):
        try:
            decoded = read_image(f, slice_index)
            pixels.append(square_resize(to_grey_array(decoded.image), info.spec.size))
            names.append(os.fspath(f))
            notes.append(decoded.notes)
        except ImageDecodeError as e:
            skipped.append({"file": os.fspath(f), "reason": str(e)})
        if pixels and (len(pixels) == batch or i == len(files) - 1):
            rows += _rows(model, info, names, notes, torch.from_numpy(np.stack(pixels)), stats)
            names, notes, pixels = [], [], []
    return rows, skipped


def flat_row(row: dict) -> dict:
    """A :func:`predict_files` row with one column per class probability (``p_<class>``, ``calibrated_<class>``),
    for CSV; None becomes an empty cell."""
    flat = {k: v for k, v in row.items() if k not in ("probs", "calibrated_probs")}
    flat |= {f"p_{c}": p for c, p in row["probs"].items()}
    flat |= {f"calibrated_{c}": p for c, p in (row["calibrated_probs"] or dict.fromkeys(row["probs"])).items()}
    return {k: "" if v is None else v for k, v in flat.items()}
