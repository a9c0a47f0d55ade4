"""How much an epoch's first step weighs in a short throughput timing, and how fast this host is.

For each (student, configuration) of the ablation: one epoch of ``--steps`` steps at the ablation's settings, timed
two ways in the same run: the epoch's own images/s (first step included: what the ablation's
``--throughput-steps`` measured before it left the first step out) and steps 2 to N (what it measures now).
Writes ``bench/results/throughput_first_step.json`` and ``.md``.

    python -m bench.throughput_first_step --data PACK
"""

from __future__ import annotations

import argparse

import torch

from bench import distill_ablation
from bench.report import RESULTS, command, md_table, write


def timings(a: argparse.Namespace, student: str, config: str, steps: int) -> dict:
    """``{"with_first_step": img/s, "from_step_2": img/s}`` of one ``steps``-step epoch."""
    ends: list[float] = []
    for t, e in distill_ablation.timed_epoch(a, student, config, steps):
        if e["event"] == "step":
            ends.append(t)
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
    # the ablation's settings (its defaults for everything not given here)
    cell = distill_ablation.parser().parse_args(
        ["--data", a.data, "--teacher", a.teacher, "--size", str(a.size), "--batch-size", str(a.batch_size)]
        + (["--split", a.split] if a.split else []))
    rows = {c: timings(cell, *c.split("/"), a.steps) for c in a.cells.split(",")}
    res = {"command": command("bench.throughput_first_step", argv), "threads": torch.get_num_threads(),
           "steps": a.steps, "images_per_s": rows}
    body = md_table(["cell", "images/s, first step included", "steps 2 to N"],
                    [[c, f"{r['with_first_step']:.1f}", f"{r['from_step_2']:.1f}"] for c, r in rows.items()])
    write(a.out, res, f"Throughput: an epoch of {a.steps} steps, first step included or not "
          f"({res['threads']} threads)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
