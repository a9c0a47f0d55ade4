"""Agreement of the differentiable LRP map (the student's side of ``sem(lrp)``) with zennit's map (the teacher's).

For each model and each composite the differentiable map reproduces, the per-image cosine between
:func:`kdcore.explain.lrp_map` and :func:`kdcore.explain.lrp_autograd.lrp_autograd` of the same model, for the
labelled class of every image of a class-folder ``--data``, at full resolution and at the ``sem`` loss's 32 x 32
(average-pooled as the loss does). The row ``lrp0 (previous student map)`` is gradient x input against the
composite, the pairing ``sem(lrp)`` used before the maps shared a rule.

    OMP_NUM_THREADS=1 python -m bench.lrp_rules --model teacher --model student --data kdcore/bundled/demo \\
        --json bench/results/lrp_rules.json
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from bench.report import command, md_table, relative, write
from kdcore.data.augment import to_input
from kdcore.data.dataset import decode_cached, load_records
from kdcore.explain import lrp_map, resize_maps
from kdcore.explain.differentiable import gradient_x_input
from kdcore.explain.lrp import DESTRIDING
from kdcore.explain.lrp_autograd import lrp_autograd
from kdcore.models import load_model

#: the resolution of the ``sem`` loss's maps (``DistillConfig.map_size``)
LOSS_SIZE = 32


def cosines(a: torch.Tensor, b: torch.Tensor) -> dict[str, list[float]]:
    """Per-image cosine of maps ``(B, H, W)`` at full resolution and at the loss's resolution."""
    small = [resize_maps(m.unsqueeze(1), (LOSS_SIZE, LOSS_SIZE)).flatten(1) for m in (a, b)]
    return {"full": F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).tolist(),
            "loss": F.cosine_similarity(*small, dim=1).tolist()}


def bench_model(ref: str, data: str, batch: int) -> list[dict]:
    model, info = load_model(ref)
    images = decode_cached(load_records(data), info.spec.size)
    x, y = to_input(torch.from_numpy(images.pixels), info.spec), torch.from_numpy(images.records.labels)
    rows = []
    for composite in DESTRIDING:
        for student in ("lrp_autograd", "lrp0 (previous student map)"):
            per = {"full": [], "loss": []}
            start = time.perf_counter()
            for i in range(0, len(x), batch):
                xb, yb = x[i:i + batch], y[i:i + batch]
                reference = lrp_map(model, xb, yb, composite)
                ours = (lrp_autograd(model, xb, yb, composite) if student == "lrp_autograd"
                        else gradient_x_input(model, xb, yb)).detach()
                for k, v in cosines(ours, reference).items():
                    per[k] += v
            row = {"model": ref, "composite": composite, "student_map": student, "n": len(x),
                   "seconds": round(time.perf_counter() - start, 2)}
            for k, v in per.items():
                row[f"mean_cosine_{k}"] = sum(v) / len(v)
                row[f"min_cosine_{k}"] = min(v)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="a model reference (repeatable; default teacher, student)")
    p.add_argument("--data", default="kdcore/bundled/demo", help="a class-folder dataset")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--json", default="bench/results/lrp_rules.json")
    a = p.parse_args(argv)
    res = {"command": command("bench.lrp_rules", argv), "threads": torch.get_num_threads(),
           "loadavg_start": os.getloadavg(), "data": relative(a.data), "loss_size": LOSS_SIZE,
           "rows": [row for ref in a.model or ["teacher", "student"] for row in bench_model(ref, a.data, a.batch)]}
    table = md_table(["model", "composite (teacher map)", "student map", "images", "mean cos full", "min cos full",
                      f"mean cos {LOSS_SIZE}x{LOSS_SIZE}", f"min cos {LOSS_SIZE}x{LOSS_SIZE}", "seconds"],
                     [[r["model"], r["composite"], r["student_map"], r["n"], f"{r['mean_cosine_full']:.4f}",
                       f"{r['min_cosine_full']:.6f}", f"{r['mean_cosine_loss']:.4f}", f"{r['min_cosine_loss']:.6f}",
                       r["seconds"]] for r in res["rows"]])
    write(a.json, res, "Differentiable LRP against zennit's LRP, same model, same composite", table,
          f" (threads {res['threads']}, load average {res['loadavg_start'][0]:.1f} at start); data "
          f"{res['data']}, the labelled class of each image.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
