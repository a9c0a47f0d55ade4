"""The ``short`` preset (what the app's Distil tab runs) against the same student trained alone, same preset.

For each seed: ``kdcore.distill.run(make_config("short"))`` and the same with the loss ``ce`` only. Records
validation accuracy / macro-F1, the wall time of the whole run (teacher cache included; the preset must stay
<= 5 min on 2 CPU cores) and the paired bootstrap CI of KD - alone. Finished runs are skipped.
Writes ``bench/results/short_preset.json`` and ``.md``.

    python -m bench.short_preset --runs runs/short-mnv2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.distill_ablation import val_scores
from bench.report import RESULTS, command, md_table, mean_std, write
from kdcore.data.pack import load_train_data
from kdcore.distill import make_config, run
from kdcore.engine.checkpoint import has_checkpoint
from kdcore.engine.loop import run_to_end
from kdcore.engine.metrics import paired_bootstrap

VARIANTS = (("kd", None), ("alone", {"ce": 1.0}))  # (name, loss replacing the preset's)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--split", default=None, help="split file (default: the dataset's file in splits/)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--override", default="{}", help='JSON merged over the preset, e.g. \'{"train": {"epochs": 1}}\'')
    p.add_argument("--runs", default="runs/short-preset")
    p.add_argument("--out", default=str(RESULTS / "short_preset"))
    a = p.parse_args(argv)
    json_path = Path(a.out).with_suffix(".json")
    res = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    res["command"] = command("bench.short_preset", argv)
    base = make_config("short", overrides={"teacher": a.teacher, **json.loads(a.override)})
    config = json.loads(json.dumps(base.to_dict()))
    if res.get("config", config) != config:
        res["runs"] = {}  # runs of another configuration are not this one's
    res["config"] = config
    data = load_train_data(a.data, base.size, a.split)
    seeds = [int(s) for s in a.seeds.split(",")]
    for seed in seeds:
        for name, loss in VARIANTS:
            key = f"{name}/{seed}"
            if key in res["runs"]:
                continue
            cfg = replace(base, train=replace(base.train, seed=seed),
                          distill=replace(base.distill, loss=loss) if loss else base.distill)
            out = Path(a.runs) / name / f"seed{seed}"
            t0 = time.perf_counter()
            final = run_to_end(run(cfg, a.data, out, resume=has_checkpoint(out), split=a.split))
            wall = time.perf_counter() - t0
            scores = val_scores(final["best_dir"], data.val)
            res["runs"][key] = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                                "wall_time_s": wall, "train_time_s": final["train_time_s"], "pred": scores["pred"]}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(res))  # progress: a cut benchmark resumes from here
    rows = []
    for name, _ in VARIANTS:
        runs = [res["runs"][f"{name}/{s}"] for s in seeds if f"{name}/{s}" in res["runs"]]
        if runs:
            rows.append([name, len(runs), mean_std([r["accuracy"] for r in runs]),
                         mean_std([r["macro_f1"] for r in runs]), f"{max(r['wall_time_s'] for r in runs):.0f} (max)"])
    body = md_table(["variant", "seeds", "val accuracy", "val macro-F1", "wall time (s)"], rows)
    paired = [s for s in seeds if f"kd/{s}" in res["runs"] and f"alone/{s}" in res["runs"]]
    if paired:
        d = paired_bootstrap(np.array([res["runs"][f"kd/{s}"]["pred"] for s in paired]),
                             np.array([res["runs"][f"alone/{s}"]["pred"] for s in paired]),
                             data.val.labels.numpy(), len(data.class_names))
        res["kd_minus_alone"] = d
        body += ["", f"KD - alone: accuracy {d['accuracy']['diff']:+.4f} (95% CI {d['accuracy']['ci95'][0]:+.4f}, "
                 f"{d['accuracy']['ci95'][1]:+.4f}), macro-F1 {d['macro_f1']['diff']:+.4f} "
                 f"(95% CI {d['macro_f1']['ci95'][0]:+.4f}, {d['macro_f1']['ci95'][1]:+.4f})."]
    c = base
    write(a.out, res, f"Short preset: {c.student} at {c.size} px, {c.train.epochs} epochs x {c.train.max_images} "
          f"images, {c.distill.describe()} vs the student alone ({torch.get_num_threads()} threads)", body,
          indent=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
