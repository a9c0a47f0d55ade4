"""Faithfulness and cost of LRP vs Grad-CAM: deletion/insertion AUC and time per batch of 32 maps.

Deletion: pixels are set to black (the background of every slice) in order of decreasing relevance, in
``--patch`` x ``--patch`` squares ranked by their summed map (single pixels make scattered noise that a CNN reacts to
whatever the order), in ``--steps`` equal steps, and the probability of the explained (predicted) class is
recorded; the AUC of that curve over the removed fraction (lower = the map found what the prediction rests on).
Insertion: start from a black image and restore pixels in the same order (higher = better). A random order is the
reference for both.
Time: one batch of 32 maps per method, next to one forward+backward (cross-entropy, all parameter gradients) of
the same batch, median of ``--repeats``; the ratio is what to compare (the CPU is shared). Writes
``bench/results/explain.json`` and ``.md``.

    nice -n 10 env OMP_NUM_THREADS=1 python -m bench.explain_bench --n 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import to_input
from kdcore.data.pack import load_train_data
from kdcore.explain import explain
from kdcore.models import load_model
from kdcore.models.predict import predict_logits

METHODS = ("lrp", "gradcam", "random")


def maps_for(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str) -> torch.Tensor:
    if method == "random":
        return torch.rand(x.shape[0], *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    return explain(model, x, targets, method)


@torch.no_grad()
def curves(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, black: float,
           steps: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion curves ``(B, steps + 1)``: probability of ``targets`` after each step.

    Pixels go in ``patch`` x ``patch`` squares ranked by their summed map.
    """
    _b, _, _h, _w = x.shape
    scores = F.avg_pool2d(maps[:, None], patch)
    rank = scores.flatten(1).argsort(1, descending=True).argsort(1).view(scores.shape)  # 0 = most relevant patch
    rank = rank.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    deletion, insertion = [], []
    for k in range(steps + 1):
        top = rank < round(k / steps * scores[0].numel())
        for out, image in ((deletion, torch.where(top, black, x)), (insertion, torch.where(top, x, black))):
            out.append(F.softmax(model(image), 1).gather(1, targets[:, None])[:, 0])
    return torch.stack(deletion, 1), torch.stack(insertion, 1)


def auc(curve: torch.Tensor) -> float:
    """Mean over images of the trapezoid area under ``(B, S + 1)`` curves on [0, 1]."""
    return float(torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1).mean())


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(ref: str, a: argparse.Namespace) -> dict:
    model, info = load_model(ref)
    data = load_train_data(a.data, info.spec.size)
    pixels, labels = data.val.pixels[: a.n], data.val.labels[: a.n]
    black = (0.0 - info.spec.mean) / info.spec.std
    row = {"model": ref, "arch": info.arch, "size": info.spec.size, "n": len(labels)}
    logits = predict_logits(model, pixels, info.spec, a.batch)
    row["val_accuracy_subset"] = float((logits.argmax(1) == labels).float().mean())
    for method in METHODS:
        dels, inss = [], []
        for i in range(0, len(labels), a.batch):
            x = to_input(pixels[i : i + a.batch], info.spec)
            targets = logits[i : i + a.batch].argmax(1)
            d, s = curves(model, x, maps_for(model, x, targets, method), targets, black, a.steps, a.patch)
            dels.append(d)
            inss.append(s)
        row[method] = {"deletion_auc": auc(torch.cat(dels)), "insertion_auc": auc(torch.cat(inss))}
        print(f"{ref} {method}: {row[method]}", flush=True)

    x, y = to_input(pixels[: a.batch], info.spec), labels[: a.batch]

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    model.train(False)
    row["forward_backward_s"] = median_time(forward_backward, a.repeats)
    model.zero_grad(set_to_none=True)
    for method in ("lrp", "gradcam"):
        row[method]["time_s"] = median_time(lambda m=method: explain(model, x, None, m), a.repeats)
        row[method]["x_forward_backward"] = row[method]["time_s"] / row["forward_backward_s"]
    print(f"{ref} timing: {row['forward_backward_s']:.3f}s fwd+bwd, lrp x{row['lrp']['x_forward_backward']:.2f}, "
          f"gradcam x{row['gradcam']['x_forward_backward']:.2f}", flush=True)
    return row


def markdown(res: dict) -> list[str]:
    """The report's table: one row per model and method."""
    rows = []
    for row in res["models"]:
        for method in METHODS:
            m = row[method]
            timing = ([f"{m['time_s']:.2f} s", f"{m['x_forward_backward']:.2f}"] if method != "random"
                      else [f"fwd+bwd {row['forward_backward_s']:.2f} s", "1"])
            rows.append([row["model"], row["arch"], row["n"], method, f"{m['deletion_auc']:.3f}",
                         f"{m['insertion_auc']:.3f}", *timing])
    return md_table(["model", "arch", "n", "method", "deletion AUC (lower better)", "insertion AUC (higher better)",
                     f"time / batch of {res['batch']}", "x forward+backward"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--student", default="student")
    p.add_argument("--n", type=int, default=200, help="validation images (the split's first N)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--patch", type=int, default=8, help="pixels are removed/added in squares of this side")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "explain"))
    a = p.parse_args(argv)
    res = {"command": command("bench.explain_bench", argv), "threads": torch.get_num_threads(),
           "loadavg_start": os.getloadavg(), "batch": a.batch, "steps": a.steps, "patch": a.patch,
           "models": [bench_model(ref, a) for ref in (a.teacher, a.student)]}
    res["loadavg_end"] = os.getloadavg()
    write(a.out, res, "LRP vs Grad-CAM: faithfulness and cost", markdown(res),
          f" (threads {res['threads']}, load average {res['loadavg_start'][0]:.1f} at start); batch {a.batch}, "
          f"{a.steps} deletion/insertion steps of {a.patch}x{a.patch} patches, black baseline.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
