"""The ``short`` preset (what the app's Distil tab runs) against the same student trained alone.

For each seed: ``kdcore.distill.run(make_config("short"))`` (``kd``), the same with the loss ``ce`` only and the
same epochs (``alone``), and ``ce`` only for as many epochs as fit in KD's wall time (``alone@wall``: the epochs
scale by the mean wall-time ratio of the paired seeds, recorded as ``wall_epochs``; when that is the preset's epochs,
``alone@wall`` is ``alone``). Each run's primary score
is its final epoch's (``last/``) validation accuracy and macro-F1; the mean of its last 5 epochs and its best epoch
(chosen on the same validation images, so optimistic) come second. The wall time is the whole run, teacher cache
included (the preset's budget: <= 5 min on 2 CPU cores). KD - alone: the mean paired difference over seeds with its
95% t-interval and sign-flip p-value (primary), and a paired bootstrap over seeds x images (secondary). Finished
runs are skipped; ``--reuse OTHER.json`` takes another report's runs of the same configuration (the student alone
under another teacher). Writes ``bench/results/short_preset.json`` and ``.md``.

    python -m bench.short_preset --teacher runs/repro-cpu/teacher/best --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.distill_ablation import val_scores
from bench.report import RESULTS, command, fmt_diff, fmt_over_seeds, md_table, mean_std, write
from kdcore.data.pack import load_train_data
from kdcore.distill import RunConfig, make_config, run
from kdcore.engine.checkpoint import has_checkpoint
from kdcore.engine.dist import default_device
from kdcore.engine.loop import amp_dtype, run_to_end
from kdcore.engine.metrics import paired_bootstrap, paired_over_seeds

VARIANTS = ("kd", "alone", "alone@wall")
COMPARISONS = (("kd", "alone", "equal epochs"), ("kd", "alone@wall", "equal wall-clock"))
LAST_K = 5  # epochs averaged for the secondary "last epochs" figure


def variant_config(base: RunConfig, name: str, seed: int, wall_epochs: int) -> RunConfig:
    """The preset (``kd``) or the student alone (``ce`` only) at the preset's epochs or at ``wall_epochs``."""
    train = replace(base.train, seed=seed, epochs=wall_epochs if name == "alone@wall" else base.train.epochs)
    distill = base.distill if name == "kd" else replace(base.distill, loss={"ce": 1.0})
    return replace(base, train=train, distill=distill)


def run_config(cfg: RunConfig) -> dict:
    """What a run's result depends on: its config, without the teacher when no loss term uses one (the student
    alone is the same run whichever teacher the preset names)."""
    d = json.loads(json.dumps(cfg.to_dict()))
    if not cfg.distill.teacher_needs:
        d.pop("teacher")
    return d


def matching_runs(res: dict, base: RunConfig) -> dict:
    """The finished runs of ``res`` (a report's JSON) that are runs of ``base``'s variants: same config, the
    teacher aside where no loss term uses it."""
    made = RunConfig.from_dict(res["config"]) if "config" in res else None
    out = {}
    for key, r in res.get("runs", {}).items():
        name, seed = key.rsplit("/", 1)
        config = r.get("config") or (made and run_config(variant_config(made, name, int(seed), r["epochs"])))
        if config == run_config(variant_config(base, name, int(seed), r["epochs"])):
            out[key] = r | {"config": config}
    return out


def run_variant(cfg: RunConfig, data_ref: str, out: Path, split: str | None, val) -> dict:
    """Train (or resume) one run; its final-epoch scores and predictions, last-epochs mean, best epoch and times."""
    t0 = time.perf_counter()
    final = run_to_end(run(cfg, data_ref, out, resume=has_checkpoint(out), split=split))
    wall = time.perf_counter() - t0
    last = val_scores(final["last_dir"], val)
    hist = final["history"]
    return {"accuracy": last["accuracy"], "macro_f1": last["macro_f1"], "pred": last["pred"],
            f"last{LAST_K}_accuracy": statistics.mean(h["val_accuracy"] for h in hist[-LAST_K:]),
            "best_accuracy": final["best"]["accuracy"], "best_epoch": final["best"]["epoch"],
            "curve": [h["val_accuracy"] for h in hist], "epochs": len(hist),
            "wall_time_s": wall, "train_time_s": final["train_time_s"]}


def wall_epochs(res: dict, seeds: list[int], epochs: int) -> int | None:
    """Epochs of ``alone@wall``: the preset's epochs scaled by KD's / alone's mean wall time over the seeds where
    both ran (None before any has)."""
    both = [s for s in seeds if f"kd/{s}" in res["runs"] and f"alone/{s}" in res["runs"]]
    if not both:
        return None
    ratio = statistics.mean(res["runs"][f"kd/{s}"]["wall_time_s"] / res["runs"][f"alone/{s}"]["wall_time_s"]
                            for s in both)
    return max(epochs, round(epochs * ratio))


def report(res: dict, seeds: list[int], y: np.ndarray, k: int) -> list[str]:
    """The per-variant table and the paired comparisons."""
    rows = []
    for name in VARIANTS:
        runs = [res["runs"][f"{name}/{s}"] for s in seeds if f"{name}/{s}" in res["runs"]]
        if runs:
            rows.append([name, runs[0]["epochs"], len(runs), mean_std([r["accuracy"] for r in runs]),
                         mean_std([r["macro_f1"] for r in runs]), mean_std([r[f"last{LAST_K}_accuracy"] for r in runs]),
                         mean_std([r["best_accuracy"] for r in runs]),
                         f"{statistics.mean(r['wall_time_s'] for r in runs):.0f} / "
                         f"{max(r['wall_time_s'] for r in runs):.0f}"])
    lines = md_table(["variant", "epochs", "seeds", "val accuracy (final epoch)", "val macro-F1 (final epoch)",
                      f"mean of last {LAST_K} epochs", "best epoch (chosen on validation)", "wall time s (mean / max)"],
                     rows)
    rows = []
    res["comparisons"] = {}
    for a, b, what in COMPARISONS:
        paired = [s for s in seeds if f"{a}/{s}" in res["runs"] and f"{b}/{s}" in res["runs"]]
        if not paired:
            continue
        ra, rb = ([res["runs"][f"{v}/{s}"] for s in paired] for v in (a, b))
        over = {m: paired_over_seeds(np.array([r[m] for r in ra]), np.array([r[m] for r in rb]))
                for m in ("accuracy", "macro_f1")}
        boot = paired_bootstrap(np.array([r["pred"] for r in ra]), np.array([r["pred"] for r in rb]), y, k)
        res["comparisons"][f"{a} - {b}"] = {"seeds": paired, "over_seeds": over, "bootstrap": boot}
        rows.append([f"{a} - {b} ({what})", len(paired),
                     *(fmt_over_seeds(over[m]) for m in ("accuracy", "macro_f1")), fmt_diff(boot["accuracy"])])
    return [*lines, "", "Final-epoch scores, paired by seed. Primary: the mean of the per-seed differences, its 95% "
                    "t-interval and the two-sided sign-flip p-value over seeds (5 seeds: at least 0.0625). "
                    "Secondary: a paired bootstrap over seeds x validation images (2,000 resamples).", "",
                    *md_table(["comparison", "seeds", "Δ accuracy [95% t-CI]", "Δ macro-F1 [95% t-CI]",
                               "Δ accuracy, bootstrap CI"], rows)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--split", default=None, help="split file (default: the dataset's file in splits/)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--override", default="{}", help='JSON merged over the preset, e.g. \'{"train": {"epochs": 1}}\'')
    p.add_argument("--runs", default="runs/short-preset")
    p.add_argument("--out", default=str(RESULTS / "short_preset"))
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="take the finished runs of this other report that are runs of this configuration (e.g. the "
                        "student alone, which no teacher changes)")
    a = p.parse_args(argv)
    json_path = Path(a.out).with_suffix(".json")
    res = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    res["command"] = command("bench.short_preset", argv)
    base = make_config("short", overrides={"teacher": a.teacher, **json.loads(a.override)})
    reused = matching_runs(json.loads(Path(a.reuse).read_text()), base) if a.reuse else {}
    res["runs"] = reused | matching_runs(res, base)  # runs of another configuration are not this one's
    res["wall_epochs"] = next((r["epochs"] for k, r in res["runs"].items() if k.startswith("alone@wall/")), None)
    res["config"] = json.loads(json.dumps(base.to_dict()))
    data = load_train_data(a.data, base.size, a.split)
    y, k = data.val.labels.numpy(), len(data.class_names)
    seeds = [int(s) for s in a.seeds.split(",")]
    for name in VARIANTS:
        for seed in seeds:
            key = f"{name}/{seed}"
            if key in res["runs"]:
                continue
            if name == "alone@wall":
                res["wall_epochs"] = res.get("wall_epochs") or wall_epochs(res, seeds, base.train.epochs)
                if res["wall_epochs"] == base.train.epochs and f"alone/{seed}" in res["runs"]:
                    res["runs"][key] = res["runs"][f"alone/{seed}"]  # the same run: same seed, same epochs
                    continue
            cfg = variant_config(base, name, seed, res.get("wall_epochs") or base.train.epochs)
            res["runs"][key] = run_variant(cfg, a.data, Path(a.runs) / name / f"seed{seed}", a.split, data.val) | {
                "config": run_config(cfg)}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(res))  # progress: a cut benchmark resumes from here
    body = report(res, seeds, y, k)
    c = base
    precision = "bf16 autocast" if amp_dtype(c.train.amp, torch.device(default_device())) else "float32"
    write(a.out, res, f"Short preset: {c.student} at {c.size} px, {c.train.epochs} epochs x "
          f"{c.train.max_images or 'all'} images, {c.distill.describe()} vs the student alone "
          f"({torch.get_num_threads()} threads, {precision})", body, indent=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
