"""How much an epoch's first step weighs in a short throughput timing, and how fast this host is.

For each (student, configuration) of the ablation: one epoch of ``--steps`` steps at the ablation's settings, timed
two ways in the same run: the epoch's own images/s (first step included: what ``--throughput-steps`` measured up to
session 7) and steps 2 to N (what it measures now). Writes ``bench/results/throughput_first_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_ablation import RESULTS, cell_config  # noqa: E402

from kdcore.distill import run  # noqa: E402


def timings(a: argparse.Namespace, student: str, config: str) -> dict:
    """``{"with_first_step": img/s, "from_step_2": img/s}`` of one ``--steps``-step epoch."""
    cfg = cell_config(a, student, config, 0, 1, a.batch_size * a.steps)
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        for e in run(cfg, a.data, out, split=a.split):
            if e["event"] == "step":
                ends.append(time.perf_counter())
            elif e["event"] == "epoch":
                return {"with_first_step": e["images_per_s"],
                        "from_step_2": (len(ends) - 1) * a.batch_size / (ends[-1] - ends[0])}
    raise RuntimeError("no epoch ended")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data folder or pack")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--split", default=None)
    p.add_argument("--cells", default="resnet10t_w20/1-alone,mobilenetv2_035/4-thesis", help="STUDENT/CONFIG list")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=str(RESULTS / "throughput_first_step"))
    a = p.parse_args(argv)
    # the ablation's defaults, which cell_config reads
    a.lr, a.temperature, a.max_images, a.no_teacher_cache = 4e-3, 4.0, None, False
    rows = {c: timings(a, *c.split("/")) for c in a.cells.split(",")}
    res = {"command": "python bench/throughput_first_step.py " + shlex.join(argv or sys.argv[1:]),
           "threads": torch.get_num_threads(), "steps": a.steps, "images_per_s": rows}
    lines = [f"# Throughput: an epoch of {a.steps} steps, first step included or not ({res['threads']} threads)", "",
             f"Command: `{res['command']}`", "", "| cell | images/s, first step included | steps 2 to N |",
             "|---|---|---|"]
    lines += [f"| {c} | {r['with_first_step']:.1f} | {r['from_step_2']:.1f} |" for c, r in rows.items()]
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
