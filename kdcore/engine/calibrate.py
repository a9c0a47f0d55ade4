"""Fitting a model's calibration and OOD check on a dataset, and writing both into its folder.

What applies them lives with the models (:mod:`kdcore.models.calibration`, :mod:`kdcore.models.ood`); fitting needs
the data, the split and the metrics, so it lives here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcore.data.pack import load_train_data
from kdcore.engine.metrics import auroc, reliability
from kdcore.errors import KDCoreError
from kdcore.models import ModelInfo, load_model, read_config
from kdcore.models.calibration import fit_temperature, nll
from kdcore.models.ood import (
    OOD_FILE,
    OOD_SCORES,
    VAL_QUANTILE,
    fit_gaussian,
    logits_and_features,
    save_stats,
    scores,
    synthetic_ood,
)
from kdcore.paths import bundled


def calibration_fields(logits: torch.Tensor, labels: torch.Tensor, fitted_on: str) -> dict:
    """Fit ``T`` and measure it: the ``"calibration"`` entry of a model's config (ECE with 15 bins)."""
    t = fit_temperature(logits, labels)
    y = labels.numpy()
    ece = [reliability(y, (logits.float() / s).softmax(1).numpy())["ece"] for s in (1.0, t)]
    return {"temperature": round(t, 5), "fitted_on": fitted_on, "num_images": len(y),
            "ece_before": ece[0], "ece_after": ece[1], "nll_before": nll(logits, labels),
            "nll_after": nll(logits, labels, t)}


def training_split(info: ModelInfo) -> Path | None:
    """The bundled split file named in the model's training summary (``summary["split"]``), if kdcore ships it."""
    name = info.summary.get("split")
    path = bundled("splits", Path(name).name) if name else None
    return path if path is not None and path.is_file() else None


def fit_ood(model: nn.Module, info: ModelInfo, train: tuple[torch.Tensor, torch.Tensor], val: torch.Tensor,
            ood: dict[str, torch.Tensor], fitted_on: str, t: float = 1.0) -> tuple[dict, dict[str, torch.Tensor]]:
    """Fit both scores, keep the one with the higher AUROC on ``ood`` (kind -> uint8 ``(M, S, S)``).

    ``train`` is (uint8 pixels ``(N, S, S)``, labels ``(N,)`` in the model's class order), ``val`` uint8 pixels,
    ``t`` the model's temperature. Returns the ``"ood"`` config entry and the statistics for :data:`OOD_FILE`.
    """
    _, train_feats = logits_and_features(model, train[0], info.spec)
    stats = fit_gaussian(train_feats, train[1], len(info.class_names))
    val_out = logits_and_features(model, val, info.spec)
    ood_out = {kind: logits_and_features(model, px, info.spec) for kind, px in ood.items()}
    measured = {}
    for kind in OOD_SCORES:
        v = scores(kind, *val_out, t, stats)
        o = {name: scores(kind, *out, t, stats) for name, out in ood_out.items()}
        thr = float(np.quantile(v, VAL_QUANTILE, method="higher"))
        measured[kind] = {"threshold": thr, "auroc": auroc(v, np.concatenate(list(o.values()))),
                          "val_flagged": float((v > thr).mean()),
                          "flagged": {name: float((s > thr).mean()) for name, s in o.items()}}
    best = max(OOD_SCORES, key=lambda k: measured[k]["auroc"])
    cfg = {"score": best, **measured[best], "fitted_on": fitted_on, "num_val": len(val),
           "auroc_by_score": {k: m["auroc"] for k, m in measured.items()}}
    if best == "mahalanobis":
        cfg["stats"] = OOD_FILE
        return cfg, stats
    return cfg, {}


def calibrate_model(ref: str, data: str, split: str | None = None, ood_per_kind: int = 200) -> dict:
    """Fit the temperature and the OOD check of model ``ref`` on ``data``'s split; write them into its folder.

    The temperature and the OOD threshold are fitted on the split's validation part, the Mahalanobis statistics
    on its training part (:func:`fit_ood`). Without ``split``: the split the model was trained
    with when kdcore ships it (:func:`training_split`), else the dataset's default split. Only ``config.json``
    (its ``"kdcore"`` entries ``calibration`` and ``ood``) and :data:`kdcore.models.ood.OOD_FILE` are written; the
    weights are not touched. Returns ``{"calibration": {...}, "ood": {...}}``.
    """
    model, info = load_model(ref)
    d = load_train_data(data, info.spec.size, split or training_split(info))
    if sorted(d.class_names) != sorted(info.class_names):
        raise KDCoreError(f"{data}: classes {d.class_names} do not match the model's {info.class_names}")
    remap = torch.tensor([info.class_names.index(c) for c in d.class_names])
    fitted_on = f"{Path(d.split_path).name}:val"
    val_logits, _ = logits_and_features(model, d.val.pixels, info.spec)
    cal = calibration_fields(val_logits, remap[d.val.labels], fitted_on)
    ood, stats = fit_ood(model, info, (d.train.pixels, remap[d.train.labels]), d.val.pixels,
                         synthetic_ood(d.val.pixels, ood_per_kind), fitted_on, cal["temperature"])
    cfg_path = Path(info.path) / "config.json"
    cfg = read_config(info.path)
    cfg["kdcore"] = cfg.get("kdcore", {}) | {"calibration": cal, "ood": ood}
    save_stats(info.path, stats)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return {"calibration": cal, "ood": ood}
