"""Make a trained model folder one of kdcore's bundled models, with what its card should say about its origin.

    python -m scripts.bundle_model --src runs/repro/teacher/best --name teacher --half \
        --data ../shared/data/brain-tumor-mri/train --note device="a 2-core CPU (AMD EPYC)" ...

Copies the weights (fp16 with ``--half``: the bundled teacher's size halves), the calibration and OOD check (fit them
first with ``kdcore calibrate --model SRC``) and the training summary into ``kdcore/bundled/models/NAME``, replacing
what was there (or re-saves a bundled model in place). ``--note KEY=VALUE`` adds or replaces a summary field
(``train_command``, ``device``, ``teacher``).
With ``--half`` the fp16 and fp32 weights' predictions on the validation side of the model's own split are compared
and the agreement is recorded as ``summary["weights"]``. Run ``python -m bench.models --write-cards`` afterwards: it
writes the measured size and latency figures into every bundled card.
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import torch

from kdcore.data.pack import load_train_data
from kdcore.engine.calibrate import training_split
from kdcore.errors import KDCoreError
from kdcore.models import ModelInfo, load_model, save_model
from kdcore.models.predict import predict_logits
from kdcore.paths import bundled


def fp16_predictions(model: torch.nn.Module, info: ModelInfo, data: str) -> tuple[torch.Tensor, ...]:
    """Predicted classes ``(N,)`` on the validation side of the model's own split (else ``data``'s default split)
    with the fp32 weights and with the weights rounded as fp16 stores them, and the labels ``(N,)``, on the CPU."""
    d = load_train_data(data, info.spec.size, training_split(info))
    full = predict_logits(model, d.val.pixels, info.spec).argmax(1).cpu()
    rounded = copy.deepcopy(model).half().float()
    return full, predict_logits(rounded, d.val.pixels, info.spec).argmax(1).cpu(), d.val.labels


def bundle(src: str | Path, dst: Path, half: bool = False, data: str = "", notes: dict | None = None) -> Path:
    """Save the calibrated model folder ``src`` as ``dst`` (fp16 if ``half``, checked on ``data``'s validation
    side), its summary updated with ``notes``; ``dst`` may be ``src`` itself."""
    model, info = load_model(src)
    if not info.calibration or not info.ood:
        raise KDCoreError(f"{src}: not calibrated (run kdcore calibrate --model {src} first)")
    notes = dict(notes or {})
    if half:
        full, rounded, _ = fp16_predictions(model, info, data)
        same = int((full == rounded).sum())
        notes["weights"] = f"fp16: the same {same}/{len(full)} validation predictions as the fp32 weights"
    if dst.resolve() != Path(src).resolve():  # a bundled model may also be re-saved in place, with new notes
        shutil.rmtree(dst, ignore_errors=True)
    return save_model(model, dst, ModelInfo(info.arch, info.class_names, info.spec, info.summary | notes, info.path,
                                            info.model_args, info.calibration, info.ood), half=half)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="a trained model folder")
    p.add_argument("--name", required=True, choices=("teacher", "student", "student-tiny"))
    p.add_argument("--half", action="store_true", help="store fp16 weights (predictions checked on validation)")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train", help="for the fp16 check")
    p.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="a summary field (repeatable)")
    a = p.parse_args(argv)
    dst = bundle(a.src, bundled("models", a.name), a.half, a.data, dict(n.split("=", 1) for n in a.note))
    print(dst, load_model(dst)[1].summary.get("weights", ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
