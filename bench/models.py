"""The shipped models side by side on their validation splits: accuracy, macro-F1, size and CPU latency ratios.

    python -m bench.models --data ../shared/data/brain-tumor-mri/train

Metrics come from :func:`kdcore.engine.evaluate.evaluate`, each model's on the validation side of the split it was
trained with (its summary's ``split``; a model trained on an older split would be flattered by a newer split's
validation side, which holds some of its training slices). Latencies are measured interleaved in one process
(teacher, student, teacher, ...) so their ratio is fair on a noisy machine. Writes ``bench/results/models.json``
and ``.md``; ``--write-cards`` also writes the figures into each model folder's card (``summary['profile']`` and
the validation ROC-AUC), weights unchanged.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench.report import RESULTS, command, md_table, write
from kdcore.data.pack import load_train_data
from kdcore.engine.calibrate import training_split
from kdcore.engine.evaluate import evaluate
from kdcore.models import WEIGHTS, ModelInfo, load_model, resolve_model_path, save_model
from kdcore.models.profile import latency_ms
from kdcore.models.runtime import onnx_runner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--models", default="teacher,student,student-tiny")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--write-cards", action="store_true", help="write the figures into the models' cards")
    p.add_argument("--out", default=str(RESULTS / "models"))
    a = p.parse_args(argv)
    names = a.models.split(",")
    loaded = {n: load_model(n) for n in names}
    default = load_train_data(a.data, 128).split_path
    splits = {n: trained_split(info, default) for n, (_, info) in loaded.items()}
    rows = {n: evaluate(n, a.data, latency_repeats=5, split=splits[n], side="val") for n in names}
    runners = {n: onnx_runner(model, info.spec) for n, (model, info) in loaded.items()}
    lat = {n: [] for n in names}
    lat_ort = {n: [] for n in names}
    for _ in range(a.rounds):  # interleaved, so all see the same machine state
        for n, (model, info) in loaded.items():
            lat[n].append(latency_ms(model, info.spec, repeats=20))
            lat_ort[n].append(latency_ms(runners[n], info.spec, repeats=20))
    base = names[0]
    table = []
    for n in names:
        r = rows[n]
        med = statistics.median(lat[n])
        arch = loaded[n][1].summary.get("arch_variant") or r["arch"]  # e.g. resnet10t_w20, not its family
        table.append({"model": n, "arch": arch, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                      "roc_auc": r["roc_auc"], "ece": r["ece"], "params": r["params"], "flops": r["flops"],
                      "latency_ms_batch1": med, "params_ratio": r["params"] / rows[base]["params"],
                      "latency_ratio": med / statistics.median(lat[base]), "num_images": r["num_images"],
                      "latency_ms_batch1_onnxruntime": statistics.median(lat_ort[n]),
                      "latency_ratio_onnxruntime": statistics.median(lat_ort[n]) / statistics.median(lat_ort[base]),
                      "split": Path(splits[n]).name})
    res = {"command": command("bench.models", argv), "rows": table}
    body = md_table(["model", "arch", "validation split", "accuracy", "macro-F1", "ROC-AUC", "ECE", "params",
                     "params vs teacher", "MFLOPs", "batch-1 ms PyTorch", "vs teacher",
                     "batch-1 ms ONNX Runtime (the app's)", "vs teacher"],
                    [[t["model"], t["arch"], f"{t['split']} ({t['num_images']} images)", f"{t['accuracy']:.4f}",
                      f"{t['macro_f1']:.4f}", f"{t['roc_auc']:.4f}", f"{t['ece']:.4f}", f"{t['params']:,}",
                      f"{t['params_ratio']:.3f}", f"{t['flops'] / 1e6:.0f}",
                      f"{t['latency_ms_batch1']:.2f}", f"{t['latency_ratio']:.3f}",
                      f"{t['latency_ms_batch1_onnxruntime']:.2f}", f"{t['latency_ratio_onnxruntime']:.3f}"]
                     for t in table])
    write(a.out, res, "Shipped models, each on the validation side of the split it was trained with", body,
          f" ({os.cpu_count()} CPU cores, batch-1 latency interleaved, median of {a.rounds} rounds x 20 runs)")
    if a.write_cards:
        for t in table:
            write_card(t["model"], *loaded[t["model"]], t, res["command"])
    return 0


def trained_split(info: ModelInfo, default: str | Path) -> Path:
    """The bundled split file named by the model's summary (the split it was trained with), else ``default``."""
    return training_split(info) or Path(default)


def write_card(ref: str, model, info: ModelInfo, row: dict, measured_by: str) -> None:
    """Re-save model ``ref`` in place (fp16 stays fp16) with ``row``'s measured figures in its card."""
    from safetensors import safe_open

    folder = resolve_model_path(ref)
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        half = any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())  # noqa: SIM118 - safe_open is not iterable
    profile = {"params": row["params"], "params_vs_teacher": row["params_ratio"], "mflops": row["flops"] / 1e6,
               "latency_ms_batch1_onnxruntime": row["latency_ms_batch1_onnxruntime"],
               "latency_vs_teacher_onnxruntime": row["latency_ratio_onnxruntime"],
               "latency_ms_batch1_pytorch": row["latency_ms_batch1"],
               "latency_vs_teacher_pytorch": row["latency_ratio"],
               "measured_by": measured_by, "machine": f"{os.cpu_count()} CPU cores, batch 1, interleaved rounds"}
    val = info.summary.get("val_metrics", {}) | {"roc_auc": row["roc_auc"]}
    summary = info.summary | {"val_metrics": val, "profile": profile}
    save_model(model, folder, ModelInfo(info.arch, info.class_names, info.spec, summary, calibration=info.calibration,
                                        ood=info.ood), half=half)


if __name__ == "__main__":
    raise SystemExit(main())
