"""The learning-rate grid of each student trained alone: the recipe setting fixed per student before its ablation.

Every (student, lr) is the ablation's cell ``STUDENT/1-alone/SEED`` (``bench.distill_ablation``, the same options
otherwise) in ``--runs/lr<lr>``; finished cells are read back, cut ones resume. The table gives each one's
final-epoch validation accuracy (primary), its best epoch (chosen on validation, labelled), the curve at a few epochs
and its rise over the last three, and each student's pick: the lr with the highest final-epoch accuracy. Every
configuration of that student's ablation then runs at the pick, so the student alone is not held back by a rate set
for another architecture, and the KD configurations get no tuning the student alone did not get.

    python -m bench.student_lr --students mobilenetv2_035,resnet10t_w8 --lrs 4e-3,1.5e-2,3e-2 --size 64 \\
        --max-images 2048 --batch-size 64 --epochs 60 --views 4 --runs runs/student-lr-64 \\
        --out bench/results/student_lr_64

Writes ``--out`` ``.json`` and ``.md``; ``--report`` tabulates the finished cells without running any.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from bench import distill_ablation as ablation
from bench.report import RESULTS, command, md_table, write
from kdcore.data.pack import load_train_data

CONFIG = "1-alone"


def lr_args(a: argparse.Namespace, lr: float) -> argparse.Namespace:
    """The ablation options of one grid point: ``lr``, its cells under ``--runs/lr<lr>``."""
    b = copy.copy(a)
    b.lr, b.runs = lr, str(Path(a.runs) / f"lr{lr:g}")
    return b


def row(student: str, lr: float, cell: dict) -> dict:
    curve = cell["curve"]
    return {"student": student, "lr": lr, "accuracy": cell["final"]["accuracy"],
            "macro_f1": cell["final"]["macro_f1"], "best_epoch_accuracy": cell["accuracy"],
            "curve": curve, "rise_last3": curve[-1] - curve[-min(3, len(curve))]}


def main(argv: list[str] | None = None) -> int:
    p = ablation.parser()
    p.description = __doc__.splitlines()[0]
    p.add_argument("--lrs", default="4e-3,1.5e-2,3e-2", help="comma list of learning rates")
    p.set_defaults(runs="runs/student-lr", out=str(RESULTS / "student_lr"), seeds="0")
    a = p.parse_args(argv)
    students, lrs, seed = a.students.split(","), [float(x) for x in a.lrs.split(",")], int(a.seeds.split(",")[0])
    val = None if a.report else load_train_data(a.data, a.size, a.split).val
    rows = []
    for st in students:
        for lr in lrs:  # a finished cell is read back, not scored again
            b = lr_args(a, lr)
            cell = ablation.load_cell(b, st, CONFIG, seed)
            if cell is None and val is not None:
                cell = ablation.run_cell(b, st, CONFIG, seed, val)
            if cell:
                rows.append(row(st, lr, cell))
    picks = {st: max((r for r in rows if r["student"] == st), key=lambda r: r["accuracy"])["lr"]
             for st in students if any(r["student"] == st for r in rows)}
    marks = [e for e in (15, 30, 45) if e < a.epochs]
    table = [[r["student"], f"{r['lr']:g}" + (" (pick)" if picks[r["student"]] == r["lr"] else ""),
              f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['best_epoch_accuracy']:.4f}",
              *(f"{r['curve'][e - 1]:.4f}" for e in marks), f"{r['rise_last3']:+.4f}"]
             for r in rows]
    settings = {"seed": seed, "config": CONFIG, **ablation.cell_settings(a)}
    settings.pop("lr")
    title = (f"The learning rate of each student trained alone ({a.size} px, {a.epochs} epochs of "
             f"{a.max_images or 'all'} images, seed {seed}{ablation.VIEWS_TITLE.format(a.views) if a.views else ''})")
    lines = ["Each student's pick is the learning rate with the highest final-epoch validation accuracy; its "
             "ablation runs every configuration at that rate.", "",
             *md_table(["student", "lr", "val accuracy (final epoch)", "val macro-F1 (final epoch)",
                        "val accuracy, best epoch (chosen on validation)", *(f"epoch {e}" for e in marks),
                        "rise, last 3 epochs"], table)]
    write(Path(a.out), {"settings": settings, "command": command("bench.student_lr", argv), "rows": rows,
                        "picks": picks}, title, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
