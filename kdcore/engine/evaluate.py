"""``evaluate``: a model against a labelled folder, with the stable JSON contract the shipped models are judged by.

Decoding is exactly training's (:func:`kdcore.data.imageio.decode_to_uint8` through the same cache).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdcore.data.dataset import decode_cached, load_records
from kdcore.data.split import Split
from kdcore.engine.metrics import classification_report, reliability
from kdcore.errors import KDCoreError
from kdcore.models import load_model
from kdcore.models.calibration import calibrated_probs, nll, temperature
from kdcore.models.predict import predict_logits
from kdcore.models.profile import model_cost


def evaluate(model_ref: str, data: str, latency_repeats: int = 30, split: str | None = None, side: str = "val",
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Metrics of ``model_ref`` (folder, ``teacher``, ``student``) on ``data`` (one folder per class).

    With ``split`` (a split file), only that ``side`` ("val" or "train") of the split is evaluated.
    ``progress(done, total)`` is called after each inference batch (images done of all).

    Probabilities are the model's calibrated ones (its fitted temperature, 1 when it has none): ``ece``, ``nll``
    and ``reliability`` describe them, ``uncalibrated`` holds the same three at temperature 1.

    Returns the JSON fields: accuracy, macro_f1, per_class, confusion_matrix, roc_auc, ece, nll, temperature,
    uncalibrated, num_images, skipped_files, params, flops, latency_ms_batch1, input_size (and reliability bins,
    class_names, model).
    """
    model, info = load_model(model_ref)
    records = load_records(data)
    if sorted(records.class_names) != sorted(info.class_names):
        raise KDCoreError(f"{data}: classes {records.class_names} do not match the model's {info.class_names}")
    if split:
        tr, va = Split.load(split).indices(records)
        records = records.subset(va if side == "val" else tr)
    decoded = decode_cached(records, info.spec.size)
    if len(decoded.records) == 0:
        raise KDCoreError(f"{data}: no readable images")
    remap = torch.tensor([info.class_names.index(c) for c in records.class_names])
    labels = remap[torch.from_numpy(decoded.records.labels)].numpy()
    logits = predict_logits(model, torch.from_numpy(decoded.pixels), info.spec, progress=progress)
    report = classification_report(labels, calibrated_probs(logits, info).numpy(), info.class_names)
    raw = reliability(labels, logits.softmax(1).numpy())
    y = torch.from_numpy(labels)
    return {
        "model": info.path, "arch": info.arch, "class_names": info.class_names, "num_images": len(labels),
        "skipped_files": decoded.skipped, **report, "nll": nll(logits, y, temperature(info)),
        "temperature": temperature(info),
        "uncalibrated": {"ece": raw["ece"], "nll": nll(logits, y), "reliability": raw["bins"]},
        **model_cost(model, info.spec, latency_repeats),
        "input_size": [info.spec.channels, info.spec.size, info.spec.size],
        "data": str(data), "split": split and f"{split}:{side}",
    }


def format_report(r: dict) -> str:
    """A readable table of an ``evaluate`` result."""
    lines = [
        f"model {r['model']} ({r['arch']}, {r['params']:,} params, {r['flops'] / 1e6:.1f} MFLOPs, "
        f"{r['latency_ms_batch1']:.2f} ms batch-1)",
        f"images {r['num_images']}  skipped {len(r['skipped_files'])}",
        f"accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  ROC-AUC {r['roc_auc'] or float('nan'):.4f}  "
        f"ECE {r['ece']:.4f}  NLL {r['nll']:.4f} at temperature {r['temperature']:.3f} "
        f"(at 1: ECE {r['uncalibrated']['ece']:.4f}, NLL {r['uncalibrated']['nll']:.4f})",
        f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for c, m in r["per_class"].items():
        lines.append(f"{c:<14}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10d}")
    return "\n".join(lines)
