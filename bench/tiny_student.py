"""The <= 1% student: the recipes tried for ``student-tiny``, one run each, scored at their final epoch.

Each recipe is ``kdcore distill --config CONFIG`` (by default the student config of ``kdcore reproduce --preset cpu``
with the bundled teacher, which is that reproduction's teacher: ``ce + kd`` at T = 4 from the cached teacher logits,
120 epochs, batch 64, the MRI augmentation) with the student, input size, weight average (``--ema``), seed and
learning rate of :data:`RECIPES`, so every recipe has the same teacher, epochs and augmentation.
Scores: the final epoch's validation accuracy and macro-F1 (primary), the mean of the last 5 epochs, and the best
epoch (chosen on the same validation images, so optimistic). One run per recipe: a difference under about 0.5
points is within the seed-to-seed spread of this student (0.004-0.005 over 5 seeds at 128 px). A finished run in
``RUNS/NAME`` is read, not retrained; an interrupted one resumes. The rows of recipes left out of ``--recipes`` are
kept from the report already at ``--out``, so a new recipe adds its row. Writes ``bench/results/tiny_student.json`` /
``.md``.

    python -m bench.tiny_student --runs runs --recipes tiny-w12c64-192-ema-lr15,tiny-w12c64-192-ema-lr15-s2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

from bench.report import RESULTS, command, md_table, write
from bench.short_preset import LAST_K, run_variant
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import load_train_data
from kdcore.distill import make_config, merge_config
from kdcore.models import count_params, create_model, load_model
from kdcore.models.profile import count_flops
from kdcore.reproduce import reproduce_preset


class Recipe(NamedTuple):
    student: str
    size: int
    ema: float
    seed: int
    lr: float


#: run name -> what it changes in the reproduction's student config (whose rate is 3e-3)
RECIPES: dict[str, Recipe] = {
    "tiny-w8-128": Recipe("resnet10t_w8", 128, 0.0, 1, 3e-3),
    "tiny-w8-192": Recipe("resnet10t_w8", 192, 0.0, 1, 3e-3),
    "tiny-w8-192-ema": Recipe("resnet10t_w8", 192, 0.998, 1, 3e-3),
    "tiny-w8-256-ema": Recipe("resnet10t_w8", 256, 0.998, 1, 3e-3),
    "tiny-w12c64-192-ema": Recipe("resnet10t_w12c64", 192, 0.998, 1, 3e-3),
    "tiny-w12c64-192-ema-s2": Recipe("resnet10t_w12c64", 192, 0.998, 2, 3e-3),
    # the rate picked for resnet10t_w8 by bench.student_lr (alone, 64 px), tried at the shipped recipe
    "tiny-w12c64-192-ema-lr15": Recipe("resnet10t_w12c64", 192, 0.998, 1, 1.5e-2),
    "tiny-w12c64-192-ema-lr15-s2": Recipe("resnet10t_w12c64", 192, 0.998, 2, 1.5e-2),
}


def recipe_overrides(r: Recipe) -> dict:
    return {"student": r.student, "size": r.size, "train": {"ema": r.ema, "seed": r.seed, "lr": r.lr}}


def _row(name: str, run: dict, teacher_params: int) -> list:
    r = Recipe(**run["recipe"])
    return [f"`{name}`", r.student, f"{run['params']:,}", f"{run['params'] / teacher_params:.2%}", r.size,
            f"{run['mflops']:.0f}", r.ema or "off", r.seed, f"{r.lr:g}", f"**{run['accuracy']:.4f}**",
            f"{run['macro_f1']:.4f}", f"{run[f'last{LAST_K}_accuracy']:.4f}",
            f"{run['best_accuracy']:.4f} (epoch {run['best_epoch'] + 1})", f"{run['train_time_s'] / 60:.0f}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="a student config (default: the cpu reproduction's, from the "
                   "bundled teacher; the same as RUNS/configs/student.json of kdcore reproduce --preset cpu)")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--split", default=None, help="split file (default: the dataset's file in splits/)")
    p.add_argument("--runs", default="runs", help="each recipe's run is RUNS/NAME")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    p.add_argument("--override", default="{}", help='JSON merged over every recipe, e.g. \'{"train": {"epochs": 1}}\'')
    p.add_argument("--out", default=str(RESULTS / "tiny_student"))
    a = p.parse_args(argv)
    out_json = Path(a.out).with_suffix(".json")
    kept = json.loads(out_json.read_text())["runs"] if out_json.is_file() else {}
    res: dict = {"command": command("bench.tiny_student", argv), "runs": {}}
    base = merge_config(reproduce_preset("cpu")["student"], {"teacher": "teacher"}) if a.config is None else {}
    teacher_params = count_params(load_model(make_config(None, a.config, base).teacher)[0])
    names = a.recipes.split(",")
    for name in names:
        r = RECIPES[name]
        cfg = make_config(None, a.config, merge_config(merge_config(base, recipe_overrides(r)), json.loads(a.override)))
        data = load_train_data(a.data, cfg.size, a.split)
        out = run_variant(cfg, a.data, Path(a.runs) / name, a.split, data.val)
        saved = json.loads((Path(a.runs) / name / "config.json").read_text())
        if ((saved["train"]["ema"], saved["train"]["seed"], saved["train"]["lr"])
                != (cfg.train.ema, cfg.train.seed, cfg.train.lr)):
            raise SystemExit(f"{a.runs}/{name} was trained with another EMA, seed or rate than the recipe {name}")
        spec = InputSpec(cfg.size)
        model = create_model(cfg.student, len(data.class_names), spec)
        params, mflops = count_params(model), count_flops(model, spec) / 1e6
        res["runs"][name] = {"recipe": r._asdict(), "params": params, "mflops": mflops,
                             **{k: v for k, v in out.items() if k != "pred"}}
    res["runs"] |= {n: run for n, run in kept.items() if n not in names and n in RECIPES
                    and Recipe(**run["recipe"]) == RECIPES[n]}
    res["runs"] = {n: res["runs"][n] for n in RECIPES if n in res["runs"]}
    rows = [_row(n, run, teacher_params) for n, run in res["runs"].items()]
    body = [f"Validation accuracy on the held-out side of the split ({len(data.val.labels):,} images); one run per "
            "recipe; train time on the machine that ran it, with other runs sharing it.", "",
            *md_table(["run", "student", "params", "of the teacher", "px", "MFLOPs", "EMA", "seed", "lr",
                       "final epoch", "macro-F1", f"mean of last {LAST_K} epochs",
                       "best epoch (chosen on validation)", "train min"], rows)]
    write(a.out, res, "The <= 1% student: recipes tried (ce + kd from the bundled teacher, same epochs)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
