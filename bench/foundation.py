"""Foundation figures: the teacher's validation metrics and training time, and the training loop's images/s
against a bare PyTorch loop on the same model and batch (the data path should add nothing).

    python -m bench.foundation --teacher teacher --run runs/teacher-e120-b128 \
        --data ../shared/data/brain-tumor-mri/train

Writes ``bench/results/foundation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import augment_batch
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import load_train_data
from kdcore.engine.evaluate import evaluate
from kdcore.engine.loop import Supervised, TrainConfig, fit
from kdcore.models import create_model, load_model


def loop_speed(data, arch: str, size: int, batch: int, steps: int) -> dict:
    """images/s of ``fit`` (augmentation, logging, channels_last) and of a bare loop on random tensors (run before
    and after ``fit``, averaged)."""
    cfg = TrainConfig(epochs=1, batch_size=batch, max_images=batch * (steps + 2))
    bare_before = bare_speed(arch, size, batch, steps)  # bare loop before and after ours: drift shows as a gap
    torch.manual_seed(0)
    model = create_model(arch, 4, InputSpec(size))
    t0 = t_end = None
    n = 0
    with tempfile.TemporaryDirectory() as run_dir:
        for e in fit(Supervised(model), data, cfg, run_dir, arch):
            if e["event"] == "step":
                if e["step"] == 2:
                    t0, n = time.perf_counter(), 0  # the first two steps warm up
                elif t0 is not None:
                    n, t_end = n + batch, time.perf_counter()
            if e["event"] == "epoch":  # the epoch's validation pass is not part of the step rate
                break
    ours = n / (t_end - t0)
    bare_after = bare_speed(arch, size, batch, steps)
    bare = (bare_before + bare_after) / 2
    return {"kdcore_images_per_s": ours, "bare_images_per_s": bare, "bare_before_after": [bare_before, bare_after],
            "augment_ms_per_batch": augment_ms(data, size, batch),
            "ratio": ours / bare, "steps": steps, "batch": batch, "arch": arch, "size": size}


def augment_ms(data, size: int, batch: int, repeats: int = 20) -> float:
    """Mean ms of augmenting one training batch (the data path's only per-step work besides indexing)."""
    spec, cfg, gen = InputSpec(size), TrainConfig().augment, torch.Generator().manual_seed(0)
    pixels = data.train.pixels[:batch]
    augment_batch(pixels, spec, cfg, gen)
    t0 = time.perf_counter()
    for _ in range(repeats):
        augment_batch(pixels, spec, cfg, gen)
    return (time.perf_counter() - t0) / repeats * 1000


def bare_speed(arch: str, size: int, batch: int, steps: int) -> float:
    """images/s of a plain PyTorch loop (random tensors, AdamW, channels_last) on the same model and batch."""
    torch.manual_seed(0)
    model = create_model(arch, 4, InputSpec(size)).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 4, (batch,))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--run", default="runs/teacher-e120-b128", help="the teacher's training run folder")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=str(RESULTS / "foundation"))
    a = p.parse_args(argv)
    data = load_train_data(a.data, 128)
    result = {"command": command("bench.foundation", argv),
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__}
    ev = evaluate(a.teacher, a.data, split=data.split_path, side="val")
    result["teacher_val"] = {k: ev[k] for k in ("accuracy", "macro_f1", "roc_auc", "ece", "num_images", "params",
                                                "flops", "latency_ms_batch1")}
    history = [json.loads(line) for line in (Path(a.run) / "metrics.jsonl").read_text().splitlines()]
    result["teacher_training"] = {"epochs": len(history),
                                  "train_time_min": sum(h["epoch_time_s"] for h in history) / 60,
                                  "mean_images_per_s": sum(h["images_per_s"] for h in history) / len(history),
                                  "device": load_model(a.teacher)[1].summary.get("device", "this CPU")}
    result["loop_speed"] = loop_speed(data, "resnet18", 128, 64, a.steps)
    tv, tt, ls = result["teacher_val"], result["teacher_training"], result["loop_speed"]
    body = md_table(["figure", "value"], [
        [f"teacher validation accuracy ({tv['num_images']} images, own split)", f"{tv['accuracy']:.4f}"],
        ["teacher validation macro-F1", f"{tv['macro_f1']:.4f}"],
        ["teacher ROC-AUC / ECE", f"{tv['roc_auc']:.4f} / {tv['ece']:.4f}"],
        ["teacher params / FLOPs / batch-1 latency",
         f"{tv['params']:,} / {tv['flops'] / 1e9:.2f} G / {tv['latency_ms_batch1']:.1f} ms"],
        ["teacher training: epochs, time", f"{tt['epochs']}, {tt['train_time_min']:.1f} min "
         f"({tt['mean_images_per_s']:.0f} img/s mean) on {tt['device']}"],
        [f"training loop vs bare PyTorch loop ({ls['arch']}, {ls['size']} px, batch {ls['batch']}, this CPU)",
         f"{ls['kdcore_images_per_s']:.1f} vs {ls['bare_images_per_s']:.1f} img/s (ratio {ls['ratio']:.2f}; "
         f"bare before/after: {ls['bare_before_after'][0]:.1f}/{ls['bare_before_after'][1]:.1f})"],
        [f"augmenting one batch of {ls['batch']} (affine warp + photometric jitter)",
         f"{ls['augment_ms_per_batch']:.1f} ms"]])
    write(a.out, result, "Foundation figures", body, f" ({result['machine']}, torch {result['torch']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
