"""The distillation ablation: does ce + kd + feat(cosine) + sem(LRP) beat its baselines?

Configurations (same epochs, augmentation, image budget, learning rate and initial student per seed):
  1 the student alone; 2 vanilla KD (ce + kd); 3 DisWOT-style ce + kd + feat(l2) + sem(Grad-CAM);
  4 the thesis ce + kd + feat(cosine) + sem(LRP); 5a (3) with cosine; 5b (3) with LRP; beyond the thesis, 6 DKD
  (ce + dkd), 7 DIST (ce + dist) and 8 KD on standardised logits (ce + kd, z-scored).
Every cell (student x configuration x seed) is a ``kdcore.distill.run`` in ``--runs/<student>/<config>/seed<k>``,
whose result lands in ``cell.json`` there: finished cells are skipped, a cut cell resumes from its last epoch, and
``--only STUDENT/CONFIG/SEED`` runs one cell alone (``scripts/gpu_campaign.py`` runs many at once that way). The tuning
grid's cells are configurations with a variant, ``CONFIG@T<t>`` (temperature t, e.g. ``@T2``) or ``CONFIG@w<w>`` (weight
w on feat and sem, e.g. ``@w0.1``), run with ``--only``, tabulated apart and compared with their base configuration;
with them the report tests the claims again, each configuration at its grid setting chosen by validation accuracy at
seed 0, over the other seeds (``tuned_claims``). ``CONFIG@perstep`` is the control of the teacher cache (the teacher's
logits, features and maps computed on every augmented batch).
Writes ``bench/results/distill_ablation.json`` and ``.md``:
mean ± std of validation accuracy and macro-F1 (of each run's final epoch; its best epoch, chosen on the same
validation images, labelled as such), where each cell ran, images/s and time per configuration, and
for (4)-(2), (4)-(1), (5b)-(3), (5a)-(3), (2)-(1) and the other comparisons: the mean paired difference over seeds
with its 95% t-interval and the exact sign-flip p-value (the primary figures), and the paired bootstrap 95% CI
(seeds and images resampled, secondary); with ``--throughput-steps`` every configuration's images/s here.

Defaults are the GPU budget (128 px, 20 epochs, batch 128, 5 seeds, three students); on the CPU cut them, e.g.
``--students resnet10t_w8 --size 64 --max-images 2048 --batch-size 64 --parallel 2`` (69 min on 2 cores), and
add ``--views 4`` (each image one of 4 fixed views, the teacher's logits, features and maps of every view cached) to
run the ``feat`` and ``sem`` cells without a teacher pass per step; see ``docs/distill.md``. ``--report``
tabulates the finished cells without running any (a cell whose run folder is gone is read from the table written
before: ``runs/`` is not committed; so are the validation labels, so the committed JSON alone makes the report,
without the data).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from bench.parallel import run_in_parallel
from bench.report import RESULTS, command, fmt_diff, fmt_over_seeds, md_table, mean_std, write
from kdcore.data.pack import TensorSet, load_train_data
from kdcore.distill import DistillConfig, RunConfig, run
from kdcore.engine.checkpoint import has_checkpoint
from kdcore.engine.dist import default_device
from kdcore.engine.loop import TrainConfig, run_to_end
from kdcore.engine.metrics import macro_f1, paired_bootstrap, paired_over_seeds
from kdcore.models import load_model
from kdcore.models.predict import predict_logits

STUDENTS = ("resnet10t_w20", "mobilenetv2_035", "resnet10t_w8")  # the shipped pick, a mobile net, one at <= 1%
ALL = {"ce": 1.0, "kd": 1.0, "feat": 1.0, "sem": 1.0}
CONFIGS: dict[str, dict] = {
    "1-alone": {"loss": {"ce": 1.0}},
    "2-kd": {"loss": {"ce": 1.0, "kd": 1.0}},
    "3-diswot": {"loss": ALL, "feat_distance": "l2", "sem_map": "gradcam"},
    "4-thesis": {"loss": ALL, "feat_distance": "cosine", "sem_map": "lrp"},
    "5a-diswot+cosine": {"loss": ALL, "feat_distance": "cosine", "sem_map": "gradcam"},
    "5b-diswot+lrp": {"loss": ALL, "feat_distance": "l2", "sem_map": "lrp"},
    "6-dkd": {"loss": {"ce": 1.0, "dkd": 1.0}},  # decoupled KD (Zhao et al. 2022), its own alpha 1, beta 8
    "7-dist": {"loss": {"ce": 1.0, "dist": 1.0}},  # DIST (Huang et al. 2022), beta = gamma = 1
    "8-kd+ls": {"loss": {"ce": 1.0, "kd": 1.0}, "kd_standardize": True},  # logit standardisation (Sun et al. 2024)
}
PAIRS = (("4-thesis", "2-kd"), ("4-thesis", "1-alone"), ("5b-diswot+lrp", "3-diswot"),
         ("5a-diswot+cosine", "3-diswot"), ("2-kd", "1-alone"), ("3-diswot", "2-kd"),
         ("4-thesis@w0.1", "2-kd"), ("4-thesis@w0.1", "1-alone"),  # the thesis at its tuned weights
         ("4-thesis@perstep", "4-thesis"), ("4-thesis@perstep", "2-kd"),  # and with per-step teacher maps
         ("6-dkd", "2-kd"), ("6-dkd", "1-alone"), ("7-dist", "2-kd"), ("7-dist", "1-alone"),  # beyond plain KD
         ("8-kd+ls", "2-kd"), ("8-kd+ls", "1-alone"))
METRICS = ("accuracy", "macro_f1")
#: The seed whose validation accuracy picks each configuration's setting from the tuning grid; the tuned comparisons
#: leave it out
TUNING_SEED = 0
#: The seeds a verdict stands on; one on fewer is marked provisional
MIN_SEEDS = 5
VIEWS_TITLE = ", each image one of {} fixed augmented views, the teacher's outputs on every view cached"
AMP_TITLES = {None: "", "bf16": ", bf16 autocast", "auto": ", bf16 autocast where the CPU or GPU has it natively"}
#: The thesis's claims, each with the comparison A - B that tests it (a positive difference supports it)
CLAIMS = (("KD helps the student over training it alone", "2-kd", "1-alone"),
          ("The thesis's configuration beats plain KD", "4-thesis", "2-kd"),
          ("The thesis's configuration beats the student trained alone", "4-thesis", "1-alone"),
          ("LRP maps beat Grad-CAM maps as the semantic signal", "5b-diswot+lrp", "3-diswot"),
          ("Cosine similarity beats L2 for feature alignment", "5a-diswot+cosine", "3-diswot"),
          ("Beyond the thesis: DKD beats plain KD", "6-dkd", "2-kd"),
          ("Beyond the thesis: DIST beats plain KD", "7-dist", "2-kd"),
          ("Beyond the thesis: logit standardisation beats plain KD", "8-kd+ls", "2-kd"))


def verdict(d: dict) -> str:
    """A claim's verdict from its paired difference over seeds (``paired_over_seeds``): supported or contradicted
    when the 95% t-interval lies above or below zero, else not shown; provisional on fewer than ``MIN_SEEDS``."""
    if not d["ci95"]:
        return "not tested (one seed)"
    lo, hi = d["ci95"]
    v = "supported" if lo > 0 else "contradicted (it lowers accuracy)" if hi < 0 else "not shown (the interval spans 0)"
    return v if d["n"] >= MIN_SEEDS else f"{v}; provisional, {d['n']} of {MIN_SEEDS} seeds"


def scores(cell: dict) -> dict:
    """The scores a cell is judged by: its final epoch's where recorded, else its best epoch's (older cells)."""
    return cell.get("final", cell)


def variant(config: str) -> tuple[str, dict]:
    """``"4-thesis@w0.1"`` -> ``("4-thesis", DistillConfig overrides)``: the base configuration's terms, retuned."""
    base, _, var = config.partition("@")
    spec = dict(CONFIGS[base])
    if var == "perstep":
        spec["teacher_cache"] = False
    elif var.startswith("T"):
        spec["temperature"] = float(var[1:])
    elif var.startswith("w"):
        spec["loss"] = {k: (float(var[1:]) if k in ("feat", "sem") else v) for k, v in spec["loss"].items()}
    elif var:
        raise ValueError(f"unknown variant {var!r}: T<temperature>, w<weight> or perstep")
    return base, spec


def cell_config(a: argparse.Namespace, student: str, config: str, seed: int, epochs: int,
                max_images: int | None) -> RunConfig:
    """The run of one cell: the table's settings, the configuration's loss terms (and its variant's changes)."""
    spec = {"temperature": a.temperature, "teacher_cache": not a.no_teacher_cache} | variant(config)[1]
    return RunConfig(
        teacher=a.teacher, student=student, size=a.size,
        train=TrainConfig(epochs=epochs, batch_size=a.batch_size, lr=a.lr, seed=seed, max_images=max_images,
                          amp=a.amp, views=a.views),
        distill=DistillConfig(**spec),
    )


def val_scores(model_dir: str | Path, val: TensorSet) -> dict:
    """Validation accuracy, macro-F1 and predicted labels (``pred``, ``N`` ints) of the model folder ``model_dir``."""
    model, info = load_model(model_dir)
    pred = predict_logits(model, val.pixels, info.spec).argmax(1).cpu().numpy()
    y = val.labels.numpy()
    return {"accuracy": float((pred == y).mean()), "macro_f1": macro_f1(y, pred, len(info.class_names)),
            "pred": pred.tolist()}


def run_cell(a: argparse.Namespace, student: str, config: str, seed: int, val: TensorSet) -> dict:
    cfg = cell_config(a, student, config, seed, a.epochs, a.max_images)
    out = cell_dir(a, student, config, seed)
    t0 = time.perf_counter()
    final = logged_run(out, cfg.train.epochs) or run_to_end(run(cfg, a.data, out, resume=has_checkpoint(out),
                                                                split=a.split))
    wall = time.perf_counter() - t0
    best, last = val_scores(final["best_dir"], val), val_scores(final["last_dir"], val)
    hist = final["history"]
    cell = {"settings": cell_settings(a), "accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
            "final": last, "curve": [h["val_accuracy"] for h in hist], "best_epoch": final["best"]["epoch"],
            "sem_rules": json.loads((out / "config.json").read_text())["distill"].get("sem_rules"),
            "images_per_s": statistics.mean(h["images_per_s"] for h in hist),
            "train_time_s": sum(h["epoch_time_s"] for h in hist), "wall_time_s": wall, "pred": best["pred"],
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    (out / "cell.json").write_text(json.dumps(cell))
    return cell


def logged_run(out: Path, epochs: int) -> dict | None:
    """The ``done`` fields ``run_cell`` reads, from a run folder whose every epoch is in ``metrics.jsonl`` and whose
    best model is exported (a finished run, e.g. a cell cut after training and packed back without its checkpoint);
    None for a run that has epochs to go."""
    log = out / "metrics.jsonl"
    if not all((out / m / "model.safetensors").is_file() for m in ("best", "last")) or not log.is_file():
        return None
    history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if len(history) < epochs:
        return None
    best = max(history, key=lambda h: h["val_accuracy"])  # the first best epoch, as ``fit`` exports it
    return {"best_dir": str(out / "best"), "last_dir": str(out / "last"), "best": {"epoch": best["epoch"]},
            "history": history}


def cell_dir(a: argparse.Namespace, student: str, config: str, seed: int) -> Path:
    return Path(a.runs) / student / config / f"seed{seed}"


def cell_settings(a: argparse.Namespace) -> dict:
    """What every cell of one table must share (``amp`` only where set, so float32 tables keep their settings)."""
    return {k: getattr(a, k) for k in ("size", "epochs", "max_images", "batch_size", "lr", "temperature")} | {
        "teacher_cache": not a.no_teacher_cache} | ({"amp": a.amp} if a.amp else {}) | (
        {"views": a.views} if a.views else {})


def timed_epoch(a: argparse.Namespace, student: str, config: str, steps: int) -> Iterator[tuple[float, dict]]:
    """The events of one ``steps``-step epoch of the cell's configuration (seed 0, a scratch folder), each with the
    ``time.perf_counter()`` at which it came."""
    cfg = cell_config(a, student, config, 0, 1, a.batch_size * steps)
    with tempfile.TemporaryDirectory() as out:
        for e in run(cfg, a.data, out, split=a.split):
            yield time.perf_counter(), e


def throughput(a: argparse.Namespace, student: str, config: str, steps: int) -> float:
    """Training images/s of one configuration here over steps 2 to ``steps`` of an epoch (the first step, which
    sets up the kernels, left out; the teacher cache is built before the first step)."""
    if steps < 2:
        raise ValueError("--throughput-steps needs at least 2 steps: the first one is not timed")
    ends: list[float] = []
    for t, e in timed_epoch(a, student, config, steps):
        if e["event"] == "step":
            ends.append(t)
            if len(ends) == steps:
                return (steps - 1) * a.batch_size / (ends[-1] - ends[0])
    raise RuntimeError(f"the epoch ended after {len(ends)} of {steps} steps")


def load_cell(a: argparse.Namespace, student: str, config: str, seed: int) -> dict | None:
    """The finished cell's result, or None; a cell made with other settings is an error."""
    path = cell_dir(a, student, config, seed) / "cell.json"
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    if cell["settings"] != cell_settings(a):
        sys.exit(f"{path} was made with other settings: choose another --runs")
    return cell


def caveats(res: dict) -> list[str]:
    """What the table's cells cannot show, from what they record: LRP cells made before one rule was used on both
    sides of ``sem``, and cells made on a split that was not recorded (the older, leaking one)."""
    out = []
    lrp = [c for key, c in res["cells"].items() if variant(key.split("/")[1])[1].get("sem_map") == "lrp"]
    if any(c.get("sem_rules") is None for c in lrp):
        out.append("- The LRP cells (4, 5b) record no `sem` rule: they were made before both sides of `sem` used one "
                   "rule, when the teacher's EpsilonPlusFlat map was compared with the student's gradient x input "
                   "map. They do not test the thesis's LRP supervision as it is meant.")
    if "split" not in res["settings"]:
        out.append("- The cells record no split: they were made on the older split, whose validation side holds "
                   "mirrored copies of training images, so every accuracy here is inflated.")
    return ["", *out] if out else []


def curves(res: dict) -> list[str]:
    """A table of the mean validation curve per student and configuration, and per tuned pick from the grid, at a
    few epochs (the last three among them), so one sees whether the budget let every configuration and every pick
    flatten; empty when no cell records a curve."""
    s, rows = res["settings"], []
    e = s["epochs"]
    marks = sorted({max(1, e // 4), max(1, e // 2), max(1, 3 * e // 4), *range(max(1, e - 2), e + 1)})
    for student in s["students"]:
        picks = tuned_settings(res["cells"], student, s["configs"]).values()
        for config in dict.fromkeys([*s["configs"], *picks]):
            got = [c["curve"] for seed in s["seeds"] if len(
                (c := res["cells"].get(f"{student}/{config}/{seed}", {})).get("curve", [])) == e]
            if got:
                mean = np.mean(got, axis=0)
                rows.append([student, config, len(got), *(f"{mean[m - 1]:.4f}" for m in marks),
                             f"{mean[-1] - mean[max(0, e - 3)]:+.4f}"])
    if not rows:
        return []
    return ["", "Validation curves (mean over seeds of the validation accuracy after each epoch; whether the budget "
                "let each configuration, and each tuned pick (`@`), flatten, and how much it still rose over the last "
                "three epochs):", "",
            *md_table(["student", "config", "n", *(f"epoch {m}" for m in marks), f"rise, epoch {max(1, e - 2)} to {e}"],
                      rows)]


def compare(cells: dict, student: str, a_cfg: str, b_cfg: str, seeds: list[int], y: np.ndarray, k: int) -> dict:
    """A - B for ``student`` over ``seeds`` (paired): ``{"seeds", "over_seeds", "bootstrap"}``, each over ``METRICS``:
    the mean per-seed difference with its t-interval and sign-flip p, and the bootstrap over seeds and images."""
    a_cells, b_cells = ([scores(cells[f"{student}/{c}/{sd}"]) for sd in seeds] for c in (a_cfg, b_cfg))
    over_seeds = {m: paired_over_seeds(np.array([c[m] for c in a_cells]), np.array([c[m] for c in b_cells]))
                  for m in METRICS}
    boot = paired_bootstrap(np.array([c["pred"] for c in a_cells]), np.array([c["pred"] for c in b_cells]), y, k)
    return {"seeds": seeds, "over_seeds": over_seeds, "bootstrap": boot}


def paired_seeds(cells: dict, student: str, configs: tuple[str, ...], seeds: list[int]) -> list[int]:
    """The ``seeds`` at which every one of ``configs`` has a cell for ``student``."""
    return [sd for sd in seeds if all(f"{student}/{c}/{sd}" in cells for c in configs)]


def ran_configs(cells: dict, student: str) -> set[str]:
    """The configurations (variants included) with at least one cell for ``student``."""
    return {key.split("/")[1] for key in cells if key.startswith(f"{student}/")}


def tuned_settings(cells: dict, student: str, configs: list[str]) -> dict[str, str]:
    """Each configuration's setting from the tuning grid for ``student``: the base or one of its grid variants
    (``@T<t>``, ``@w<w>``; not the ``@perstep`` control), whichever has the higher validation accuracy at
    ``TUNING_SEED`` (ties: the first by name)."""
    ran, out = ran_configs(cells, student), {}
    for config in configs:
        grid = sorted(c for c in ran if c == config or (c.startswith(f"{config}@") and not c.endswith("@perstep")))
        acc = {c: scores(cells[key])["accuracy"] for c in grid if (key := f"{student}/{c}/{TUNING_SEED}") in cells}
        if acc:
            out[config] = max(acc, key=acc.get)
    return out


def tuned_claims(res: dict, summary: dict, y: np.ndarray, k: int) -> list[str]:
    """The claims again, each configuration at its ``tuned_settings``, over the seeds other than ``TUNING_SEED``;
    adds ``summary[student]["tuned"]`` and returns the report's lines (none without a grid)."""
    cells, s, rows = res["cells"], res["settings"], []
    for student in s["students"]:
        pick = tuned_settings(cells, student, s["configs"])
        if all(c == base for base, c in pick.items()):
            continue
        tuned = summary[student]["tuned"] = {"settings": pick, "verdicts": {}}
        for claim, a_cfg, b_cfg in CLAIMS:
            if a_cfg not in pick or b_cfg not in pick:
                continue
            pair = (pick[a_cfg], pick[b_cfg])
            seeds = paired_seeds(cells, student, pair, [sd for sd in s["seeds"] if sd != TUNING_SEED])
            if len(seeds) < 2:  # a pick that has not yet run on the other seeds: said, not dropped
                shared = f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'}"
                v = tuned["verdicts"][claim] = f"pending: the picks share {shared} besides the tuning seed"
                rows.append([student, claim, f"{pair[0]} - {pair[1]}", len(seeds), "-", "-", f"**{v}**"])
                continue
            d = tuned[f"{pair[0]} vs {pair[1]}"] = compare(cells, student, *pair, seeds, y, k)
            v = tuned["verdicts"][claim] = verdict(d["over_seeds"]["accuracy"])
            rows.append([student, claim, f"{pair[0]} - {pair[1]}", len(seeds),
                         fmt_over_seeds(d["over_seeds"]["accuracy"]), fmt_diff(d["bootstrap"]["accuracy"]), f"**{v}**"])
    if not rows:
        return []
    return ["", "Tuned verdicts: each configuration at the setting of its tuning grid (the base, `@T<t>` or `@w<w>`) "
                f"with the higher validation accuracy at seed {TUNING_SEED}, compared over the other seeds, which "
                "played no part in the choice (mean paired difference, 95% t-interval, sign-flip p; the paired "
                "bootstrap over those seeds and the images second):", "",
            *md_table(["student", "claim", "comparison (tuned)", "seeds", "Δ accuracy [95% t-CI], p",
                       "Δ accuracy, bootstrap CI", "verdict"], rows)]


def summarise(res: dict, y: np.ndarray, k: int) -> tuple[dict, str, list[str]]:
    """The summary (verdicts, means, paired differences, tuning grid), the report's title and its body."""
    cells, s = res["cells"], res["settings"]
    final = all("final" in c for c in cells.values())
    scored = "final epoch" if final else "best epoch, chosen on validation"
    title = (f"Distillation ablation ({s['size']} px, {s['epochs']} epochs, {s['max_images'] or 'all'} images/epoch, "
             f"seeds {s['seeds']}, teacher cache {'on' if s.get('teacher_cache', True) else 'off'}"
             f"{AMP_TITLES[s.get('amp')]}{VIEWS_TITLE.format(s['views']) if s.get('views') else ''})")
    summary, rows = {}, []
    for student in s["students"]:
        summary[student] = {}
        for config in s["configs"]:
            done = [cells[key] for seed in s["seeds"] if (key := f"{student}/{config}/{seed}") in cells]
            cpu = res.get("throughput", {}).get(f"{student}/{config}")
            if not done:
                if cpu:
                    rows.append([student, config, 0, "-", "-", "-", "-", "-", "-", f"{cpu:.0f}"])
                continue
            summary[student][config] = {
                "n": len(done), **{m: [scores(r)[m] for r in done] for m in METRICS},
                "best_epoch_accuracy": [r["accuracy"] for r in done],
                "devices": sorted({r.get("device", "cpu") for r in done}),
                "images_per_s": statistics.mean(r["images_per_s"] for r in done),
                "train_time_s": statistics.mean(r["train_time_s"] for r in done), "cpu_images_per_s": cpu}
            c = summary[student][config]
            rows.append([student, config, len(done), mean_std(c["accuracy"]), mean_std(c["macro_f1"]),
                         mean_std(c["best_epoch_accuracy"]) if final else "(same)", ", ".join(c["devices"]),
                         f"{c['train_time_s']:.0f}", f"{c['images_per_s']:.0f}", f"{cpu:.0f}" if cpu else "-"])
    table = ["", f"Scores: each run's {scored}" + ("" if final else " (so optimistic, for every configuration "
                                                   "alike)") + ".", "",
             *md_table(["student", "config", "n", f"val accuracy ({scored})", f"val macro-F1 ({scored})",
                        "val accuracy, best epoch (chosen on validation)", "trained on", "train time (s)",
                        "images/s there", "images/s on this CPU"], rows)]
    if res.get("throughput"):
        table += ["", f"images/s on this CPU: {torch.get_num_threads()} threads, steps 2 to N of one epoch at the "
                      "same settings (`--throughput-steps N`), teacher caches built beforehand; 'images/s there': "
                      "each cell's training."]
    rows, verdicts = [], []
    for student in s["students"]:
        grid = sorted(c for c in ran_configs(cells, student) if "@" in c)
        for a_cfg, b_cfg in dict.fromkeys([*PAIRS, *((c, variant(c)[0]) for c in grid)]):  # each variant vs its base
            if not (seeds := paired_seeds(cells, student, (a_cfg, b_cfg), s["seeds"])):
                continue
            d = summary[student][f"{a_cfg} vs {b_cfg}"] = compare(cells, student, a_cfg, b_cfg, seeds, y, k)
            rows.append([student, f"({a_cfg}) - ({b_cfg})", len(seeds),
                         *(fmt_over_seeds(d["over_seeds"][m]) for m in METRICS),
                         *(fmt_diff(d["bootstrap"][m]) for m in METRICS)])
        for claim, a_cfg, b_cfg in CLAIMS:
            if (d := summary[student].get(f"{a_cfg} vs {b_cfg}")) is not None:
                v = verdict(d["over_seeds"]["accuracy"])
                summary[student].setdefault("verdicts", {})[claim] = v
                verdicts.append([student, claim, f"{a_cfg} - {b_cfg}", fmt_over_seeds(d["over_seeds"]["accuracy"]),
                                 f"**{v}**"])
    lines = [f"Verdicts on the thesis's claims (and those beyond it), from the mean paired difference in validation "
             f"accuracy ({scored}) "
             "over seeds and its 95% t-interval:", *caveats(res), "",
             *md_table(["student", "claim", "comparison", "Δ accuracy [95% t-CI], p", "verdict"], verdicts),
             *tuned_claims(res, summary, y, k), *table]
    lines += ["", f"Paired differences A - B of the {scored} validation scores. Primary: the "
                  "mean over seeds of the per-seed difference, its 95% t-interval (t with n - 1 degrees of freedom) "
                  "and the two-sided sign-flip permutation p-value over seeds (exact: all 2^n sign patterns; with "
                  "5 seeds it cannot fall below 0.0625; not corrected for the number of comparisons). Secondary: the "
                  "95% paired bootstrap CI, 2,000 resamples of seeds and validation images.", "",
              *md_table(["student", "comparison", "seeds", "Δ accuracy [95% t-CI], p", "Δ macro-F1 [95% t-CI], p",
                         "Δ accuracy, bootstrap CI", "Δ macro-F1, bootstrap CI"], rows)]
    lines += curves(res)
    tuned = sorted(key for key in cells if "@" in key)
    if tuned:
        rows = []
        for key in tuned:
            student, config, seed = key.split("/")
            c, base = scores(cells[key]), cells.get(f"{student}/{variant(config)[0]}/{seed}")
            summary.setdefault("tuning", {})[key] = {"accuracy": c["accuracy"], "macro_f1": c["macro_f1"]}
            rows.append([student, config, seed, f"{c['accuracy']:.4f}", f"{c['macro_f1']:.4f}",
                         f"{scores(base)['accuracy']:.4f}" if base else "-"])
        lines += ["", "Variants: the tuning grid (the same small effort for every KD configuration, chosen on "
                      "validation) and `@perstep` "
                      "(the teacher's outputs on every augmented batch instead of the cache); validation accuracy of "
                      "each variant and of its base configuration with the same seed:", "",
                  *md_table(["student", "config", "seed", "val accuracy", "val macro-F1", "base config's accuracy"],
                            rows)]
    return summary, title, lines


def parser() -> argparse.ArgumentParser:
    """The ablation's options (also the cell settings :mod:`bench.throughput_first_step` times)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--split", default=None, help="split file (default: the dataset's file in splits/)")
    p.add_argument("--students", default=",".join(STUDENTS), help="comma list of timm archs")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-images", type=int, default=None, help="image budget per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--no-teacher-cache", action="store_true", help="teacher logits and maps at every step")
    p.add_argument("--views", type=int, default=0,
                   help="each image one of N fixed augmentations, with the teacher's logits, features and maps of "
                        "every view cached (no teacher pass per step); 0 = fresh augmentations (default)")
    p.add_argument("--amp", choices=("bf16", "auto"), default=None,
                   help="bf16 autocast ('auto': where the hardware computes it natively); default float32")
    p.add_argument("--runs", default="runs/ablation", help="folder of the cells' run folders")
    p.add_argument("--out", default=str(RESULTS / "distill_ablation"), help="results path without extension")
    p.add_argument("--only", default=None, help="run one cell STUDENT/CONFIG/SEED (writes its cell.json) and stop")
    p.add_argument("--report", action="store_true", help="tabulate the finished cells only; run nothing")
    p.add_argument("--parallel", type=int, default=1,
                   help="run the missing cells as this many processes at once, the CPU threads shared among them")
    p.add_argument("--throughput-steps", type=int, default=0,
                   help="also measure each configuration's images/s here over this many steps")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    students, configs = a.students.split(","), a.configs.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    settings = {"students": students, "configs": configs, "seeds": seeds, "teacher": a.teacher, "data": a.data,
                **cell_settings(a)}
    json_path = Path(a.out).with_suffix(".json")
    res: dict = {"cells": {}}
    # cells whose run folder is gone (runs/ is not committed) are taken from the table written before
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    saved = previous.get("cells", {})
    if a.parallel > 1 and not (a.only or a.report):
        todo = [key for seed in seeds for st in students for c in configs  # a cut campaign leaves whole seeds
                if (key := f"{st}/{c}/{seed}") not in saved and load_cell(a, st, c, seed) is None]
        run_in_parallel("bench.distill_ablation", [*(sys.argv[1:] if argv is None else argv), "--parallel", "1"], todo,
                        a.parallel)
    res.update(settings=settings, command=command("bench.distill_ablation", argv),
               machine={"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                        "device": default_device()})
    if a.report and "val_labels" in previous:  # the saved cells' own labels: the report needs no data
        y, class_names = np.array(previous["val_labels"]), previous["class_names"]
        if "split" in previous["settings"]:
            res["settings"]["split"] = previous["settings"]["split"]
    else:
        data = load_train_data(a.data, a.size, a.split)
        y, class_names = data.val.labels.numpy(), data.class_names
        res["settings"]["split"] = Path(data.split_path).name
        if previous.get("val_labels", y.tolist()) != y.tolist():
            sys.exit(f"{json_path} holds cells of another validation set: choose another --out")
        if a.only:
            student, config, seed = a.only.split("/")
            run_cell(a, student, config, int(seed), data.val)
            return 0
    res.update(val_labels=y.tolist(), class_names=class_names)
    k = len(class_names)
    for student in students:
        for config in configs:
            for seed in seeds:
                key = f"{student}/{config}/{seed}"
                cell = load_cell(a, student, config, seed) or saved.get(key)
                if cell is not None and cell["settings"] != cell_settings(a):
                    sys.exit(f"{key} in {json_path} was made with other settings: choose another --out")
                if cell is None and not a.report:
                    print(f"cell {key}", flush=True)
                    cell = run_cell(a, student, config, seed, data.val)
                if cell is not None:
                    res["cells"][key] = cell
        for path in sorted(Path(a.runs).glob(f"{student}/*@*/seed*/cell.json")):
            config, seed = path.parent.parent.name, int(path.parent.name[len("seed"):])
            res["cells"][f"{student}/{config}/{seed}"] = load_cell(a, student, config, seed)
    kept = {k: c for k, c in saved.items() if k not in res["cells"]}  # a run of a subset keeps the table's other cells
    if any(c["settings"] != cell_settings(a) for c in kept.values()):
        sys.exit(f"{json_path} holds cells made with other settings: choose another --out")
    res["cells"] |= kept
    for name in ("students", "configs", "seeds"):  # so the report covers them as well
        was = previous.get("settings", {}).get(name, [])
        res["settings"][name] = [*was, *(v for v in res["settings"][name] if v not in was)]
    res["settings"]["seeds"].sort()
    tp_path = Path(a.runs) / "throughput.json"
    res["throughput"] = json.loads(tp_path.read_text()) if tp_path.is_file() else previous.get("throughput", {})
    if a.throughput_steps:
        res["throughput"] = {f"{st}/{c}": throughput(a, st, c, a.throughput_steps) for st in students for c in configs}
        tp_path.parent.mkdir(parents=True, exist_ok=True)
        tp_path.write_text(json.dumps(res["throughput"]))
    res["summary"], title, body = summarise(res, y, k)
    write(a.out, res, title, body, indent=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
