"""Does the DisWOT score predict distilled accuracy on this task? Proxies vs short-budget KD, per candidate.

1. A snapshot of the teacher is copied to ``RUNS/teacher`` (the training run keeps overwriting its ``best/``).
2. Proxies per candidate: params, FLOPs, batch-1 latency; the DisWOT terms with Grad-CAM maps (3 random inits x
   3 stratified batches of 64 at 128 px, trained and randomly initialised teacher) and with LRP maps (init 0,
   batch 0), each under both distances.
3. Every candidate is distilled with the same budget (logit KD ``ce + kd``, T = 4; by default 128 px, 15 epochs,
   batch 128, seeds 0 and 1), and its best validation accuracy recorded (mean over seeds). ``--only NAME/SEED``
   runs one distillation alone (``scripts/gpu_campaign.py`` runs them in parallel on a GPU that way).
4. Kendall tau and Spearman rho (scipy) between each proxy and the distilled accuracy, over the finished ones.

Resumable: candidates already in the JSON are skipped, a half-done distillation continues from its checkpoint.
Writes ``bench/results/diswot.json``, ``diswot.md`` and ``diswot_scatter.html`` / ``.png``.

    nohup nice -n 10 env OMP_NUM_THREADS=1 python -m bench.diswot_validate > runs/diswot-validate.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from bench.report import RESULTS, command, md_table, write
from kdcore.data.pack import load_train_data
from kdcore.distill import make_config, run
from kdcore.engine.checkpoint import has_checkpoint
from kdcore.engine.loop import run_to_end
from kdcore.models import load_model, resolve_model_path
from kdcore.rank.candidates import build_candidate, candidate_table
from kdcore.rank.diswot import DISTANCES, SCORES, Terms, matrix_distance, model_terms, sample_inputs

#: 13 candidates over 0.37M-4.9M parameters and 8 families, small and large alternating (so that a partial run
#: already spans the range).
BENCH_CANDIDATES = [
    "mobilenetv3_small_050", "resnet10t", "lcnet_035", "efficientnet_lite0", "mnasnet_050", "mobilenetv2_100",
    "ghostnet_050", "mobilenetv3_large_100", "mobilenetv2_035", "regnetx_002", "mobilenetv4_conv_small_050",
    "lcnet_100", "mobilenetv3_small_100",
]
INITS, BATCHES = 3, 3
GRADCAM, LRP = SCORES["original"], SCORES["thesis"]


def snapshot_teacher(src: str, dst: Path) -> Path:
    """Copy the model ``src`` (a folder or ``teacher``) to ``dst`` once; later calls reuse the copy."""
    if not (dst / "model.safetensors").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "README.md"):
            shutil.copy2(resolve_model_path(src) / name, dst / name)
    return dst


def terms_json(teacher: Terms, student: Terms) -> dict:
    """``{distance: {"m_s": [per batch], "m_r": [per batch]}}``."""
    return {d: {"m_s": [matrix_distance(t, s, d) for t, s in zip(teacher.similarities, student.similarities)],
                "m_r": [matrix_distance(t, s, d) for t, s in zip(teacher.grams, student.grams)]} for d in DISTANCES}


def proxies(name: str, num_classes: int, spec, batches, refs: dict) -> dict:
    """The candidate's cost and all its DisWOT terms against each teacher reference."""
    row = candidate_table(spec, [name], num_classes=num_classes)[0]
    out = {k: row[k] for k in ("params", "flops", "latency_ms")} | {"gradcam": {}, "seconds": {}}
    for init in range(INITS):
        t0 = time.perf_counter()
        student = build_candidate(name, num_classes, spec, seed=init)
        terms = model_terms(student, batches, GRADCAM)
        out["seconds"].setdefault("gradcam_per_batch", (time.perf_counter() - t0) / len(batches))
        for teacher in ("trained", "random"):
            out["gradcam"].setdefault(teacher, []).append(terms_json(refs[teacher], terms))
        if init == 0:
            t0 = time.perf_counter()
            out["lrp"] = terms_json(refs["lrp"], model_terms(student, batches[:1], LRP))
            out["seconds"]["lrp_one_batch"] = time.perf_counter() - t0
    return out


def budget(a: argparse.Namespace) -> dict:
    """The distillation budget every candidate gets (logit KD, ce + kd, T = 4, teacher cache on)."""
    return {"size": a.size, "train": {"epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
                                      "max_images": a.max_images, "warmup_epochs": 1.0},
            "distill": {"loss": {"ce": 1.0, "kd": 1.0}, "temperature": 4.0}}


def distill(name: str, seed: int, teacher: Path, a: argparse.Namespace) -> dict:
    """Distil candidate ``name`` with seed ``seed`` (or read the finished run's ``result.json``)."""
    out = Path(a.runs) / name / f"seed{seed}"
    done = out / "result.json"
    b = budget(a)
    if done.is_file():
        result = json.loads(done.read_text())
        if result["budget"] != b:
            sys.exit(f"{done} was made with another budget: choose another --runs")
        return result
    overrides = b | {"teacher": str(teacher), "student": name, "train": b["train"] | {"seed": seed}}
    cfg = make_config(None, overrides=overrides)
    t0 = time.perf_counter()
    final = run_to_end(run(cfg, a.data, out, resume=has_checkpoint(out), split=a.split))
    hist = final["history"]
    result = {"budget": b, "seed": seed, "best_accuracy": final["best"]["accuracy"],
              "best_macro_f1": final["best"]["macro_f1"], "final_accuracy": hist[-1]["val_accuracy"],
              "curve": [h["val_accuracy"] for h in hist], "train_time_s": final["train_time_s"],
              "wall_time_s": time.perf_counter() - t0,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    done.write_text(json.dumps(result))
    return result


def distilled(name: str, teacher: Path, a: argparse.Namespace) -> dict:
    """Mean over seeds of the candidate's best validation accuracy, with the runs."""
    runs = [distill(name, seed, teacher, a) for seed in a.seeds]
    accs = [r["best_accuracy"] for r in runs]
    return {"best_accuracy": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "best_macro_f1": float(np.mean([r["best_macro_f1"] for r in runs])),
            "final_accuracy": float(np.mean([r["final_accuracy"] for r in runs])),
            "train_time_s": float(np.mean([r["train_time_s"] for r in runs])), "runs": runs}


def proxy_table(cands: dict) -> dict[str, dict[str, float]]:
    """Proxy name -> {candidate: value}, higher = predicted better."""
    def diswot(c, maps, d, teacher="trained", inits=1, batches=1, parts=("m_s", "m_r")):
        terms = c["lrp"] if maps == "lrp" else c["gradcam"][teacher]
        runs = [terms] if maps == "lrp" else terms[:inits]
        vals = [sum(r[d][k][b] for k in parts) for r in runs for b in range(batches)]
        return -float(np.mean(vals))

    rng = np.random.default_rng(0)
    names = sorted(cands)
    perm = rng.permutation(len(names))
    table = {
        "DisWOT Grad-CAM/L2 (original, 1 batch)": {n: diswot(c, "gradcam", "l2") for n, c in cands.items()},
        f"DisWOT Grad-CAM/L2, {INITS} inits x {BATCHES} batches": {
            n: diswot(c, "gradcam", "l2", inits=INITS, batches=BATCHES) for n, c in cands.items()},
        "DisWOT LRP/cosine (thesis)": {n: diswot(c, "lrp", "cosine") for n, c in cands.items()},
        "DisWOT Grad-CAM/cosine": {n: diswot(c, "gradcam", "cosine") for n, c in cands.items()},
        "DisWOT LRP/L2": {n: diswot(c, "lrp", "l2") for n, c in cands.items()},
        "DisWOT Grad-CAM/L2, random teacher": {n: diswot(c, "gradcam", "l2", "random") for n, c in cands.items()},
        "M_r alone (L2)": {n: diswot(c, "gradcam", "l2", parts=("m_r",)) for n, c in cands.items()},
        "M_s alone (Grad-CAM/L2)": {n: diswot(c, "gradcam", "l2", parts=("m_s",)) for n, c in cands.items()},
        "M_s alone (LRP/cosine)": {n: diswot(c, "lrp", "cosine", parts=("m_s",)) for n, c in cands.items()},
        "params": {n: float(c["params"]) for n, c in cands.items()},
        "FLOPs": {n: float(c["flops"]) for n, c in cands.items()},
        "random ranking (seed 0)": {n: float(perm[i]) for i, n in enumerate(names)},
    }
    return table


def spread(cands: dict) -> dict:
    """Std of the original score over inits x batches, against the gaps between candidates' mean scores."""
    per = {n: [-(r["l2"]["m_s"][b] + r["l2"]["m_r"][b]) for r in c["gradcam"]["trained"] for b in range(BATCHES)]
           for n, c in cands.items()}
    means = sorted(float(np.mean(v)) for v in per.values())
    return {"std_over_inits_and_batches": {n: float(np.std(v, ddof=1)) for n, v in per.items()},
            "std_over_batches_init0": {n: float(np.std(v[:BATCHES], ddof=1)) for n, v in per.items()},
            "std_over_inits_batch0": {n: float(np.std(v[::BATCHES], ddof=1)) for n, v in per.items()},
            "median_gap_between_neighbours": float(np.median(np.diff(means))) if len(means) > 1 else None,
            "range_of_means": means[-1] - means[0] if means else None}


def correlations(cands: dict) -> dict:
    done = {n: c for n, c in cands.items() if "distilled" in c}
    if len(done) < 3:
        return {}
    acc = [done[n]["distilled"]["best_accuracy"] for n in sorted(done)]
    out = {}
    for proxy, values in proxy_table(done).items():
        v = [values[n] for n in sorted(done)]
        tau, p_tau = kendalltau(v, acc)
        rho, p_rho = spearmanr(v, acc)
        out[proxy] = {"kendall_tau": float(tau), "kendall_p": float(p_tau), "spearman_rho": float(rho),
                      "spearman_p": float(p_rho), "n": len(done)}
    return out


def write_report(res: dict, out: Path) -> None:
    """The JSON, the markdown report and (with two candidates distilled) the scatter plots."""
    cands = res["candidates"]
    done = {n: c for n, c in cands.items() if "distilled" in c}
    proxies_now = proxy_table(cands) if cands else {}
    body = [f"## Correlation with distilled validation accuracy ({len(done)} of {len(cands)} candidates distilled)",
            "", *md_table(["proxy", "Kendall tau", "p", "Spearman rho", "p"],
                          [[proxy, f"{c['kendall_tau']:.3f}", f"{c['kendall_p']:.3f}", f"{c['spearman_rho']:.3f}",
                            f"{c['spearman_p']:.3f}"] for proxy, c in res.get("correlations", {}).items()])]
    orig = proxies_now.get("DisWOT Grad-CAM/L2 (original, 1 batch)", {})
    thesis = proxies_now.get("DisWOT LRP/cosine (thesis)", {})
    by_size = sorted(cands, key=lambda n: cands[n]["params"])
    rows = []
    for n in by_size:
        c = cands[n]
        d = c.get("distilled", {})
        g = c["gradcam"]["trained"][0]["l2"]
        rows.append([n, f"{c['params'] / 1e6:.2f}", f"{c['flops'] / 1e6:.0f}", f"{c['latency_ms']:.1f}",
                     f"{orig[n]:.4f}", f"{thesis[n]:.4f}", f"{g['m_r'][0]:.2e}", f"{g['m_s'][0]:.4f}",
                     f"{d.get('best_accuracy', float('nan')):.4f}", f"{d.get('final_accuracy', float('nan')):.4f}",
                     f"{d.get('train_time_s', float('nan')):.0f}"])
    body += ["", "## Per candidate", "",
             *md_table(["candidate", "params (M)", "MFLOPs", "latency (ms)", "original score", "thesis score", "M_r",
                        "M_s", "distilled val acc", "final acc", "train (s)"], rows)]
    if cands:
        s = res["spread"]
        body += ["", "## Spread of the original score (Grad-CAM/L2, trained teacher)", "",
                 f"Median gap between neighbouring candidates' mean scores: {s['median_gap_between_neighbours']:.4f}; "
                 f"range of means: {s['range_of_means']:.4f}.", "",
                 *md_table(["candidate", "std over 3 inits x 3 batches", "std over batches (init 0)",
                            "std over inits (batch 0)"],
                           [[n, f"{s['std_over_inits_and_batches'][n]:.4f}", f"{s['std_over_batches_init0'][n]:.4f}",
                             f"{s['std_over_inits_batch0'][n]:.4f}"] for n in by_size])]
    t = res["teacher"]
    write(out, res, "DisWOT validation: does the training-free score predict distilled accuracy here?", body,
          f"  \nTeacher: `{t['source']}` (val accuracy {t.get('val_accuracy')}, epoch {t.get('epoch')}); scores at "
          f"{res['size']} px, N = {res['batch_size']}; distillation budget per candidate: "
          f"`{json.dumps(res.get('budget'))}`, seeds {res.get('seeds')} (accuracy = mean over seeds of the best "
          "epoch's).")
    if len(done) >= 2:
        plot(done, proxies_now, out)


def plot(done: dict, proxies_now: dict, out: Path) -> None:
    """Scatter of distilled accuracy against the two DisWOT variants: plotly HTML and a matplotlib PNG."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = ["DisWOT Grad-CAM/L2 (original, 1 batch)", "DisWOT LRP/cosine (thesis)", "params"]
    names = sorted(done)
    acc = [done[n]["distilled"]["best_accuracy"] for n in names]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=keys, shared_yaxes=True)
    for i, k in enumerate(keys, 1):
        fig.add_trace(go.Scatter(x=[proxies_now[k][n] for n in names], y=acc, mode="markers+text", text=names,
                                 textposition="top center", textfont={"size": 8}, showlegend=False), row=1, col=i)
    fig.update_yaxes(title_text="distilled val accuracy", row=1, col=1)
    fig.update_layout(width=1500, height=520, title="DisWOT proxies vs distilled accuracy (short KD budget)")
    fig.write_html(out.parent / (out.name + "_scatter.html"), include_plotlyjs="cdn")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    f, axes = plt.subplots(1, len(keys), figsize=(16, 4.8), sharey=True)
    for ax, k in zip(axes, keys):
        xs = [proxies_now[k][n] for n in names]
        ax.scatter(xs, acc)
        for x, y, n in zip(xs, acc, names):
            ax.annotate(n, (x, y), fontsize=6)
        ax.set_title(k, fontsize=9)
        ax.set_xscale("log" if k == "params" else "linear")
    axes[0].set_ylabel("distilled val accuracy")
    f.tight_layout()
    f.savefig(out.parent / (out.name + "_scatter.png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--split", default=None)
    p.add_argument("--candidates", default=",".join(BENCH_CANDIDATES))
    p.add_argument("--runs", default="runs/diswot-validate")
    p.add_argument("--phase", choices=["all", "proxies", "report"], default="all",
                   help="proxies: scores only (no distillation); report: rewrite the tables from the JSON")
    p.add_argument("--only", default=None, help="distil one candidate NAME/SEED (writes its result.json) and stop")
    p.add_argument("--size", type=int, default=128, help="distillation budget: resolution")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--max-images", type=int, default=None, help="image budget per epoch")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--out", default=str(RESULTS / "diswot"))
    a = p.parse_args(argv)
    a.seeds = [int(x) for x in a.seeds.split(",")]
    out, runs = Path(a.out), Path(a.runs)
    if a.only:
        name, seed = a.only.split("/")
        distill(name, int(seed), Path(a.teacher), a)
        return 0
    json_path = out.with_suffix(".json")
    res = json.loads(json_path.read_text()) if json_path.is_file() else {"candidates": {}}
    save = lambda: json_path.write_text(json.dumps(res, indent=1))  # noqa: E731  (progress: a cut run resumes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.phase != "report":
        res["command"] = command("bench.diswot_validate", argv)
        teacher_dir = snapshot_teacher(a.teacher, runs / "teacher")
        teacher, info = load_model(teacher_dir)
        summary = info.summary
        res["teacher"] = {"source": a.teacher, "snapshot": str(teacher_dir), "arch": info.arch,
                          "val_accuracy": summary.get("val_metrics", {}).get("accuracy"),
                          "epoch": summary.get("best_epoch")}
        res.update(size=info.spec.size, batch_size=64, threads=torch.get_num_threads(), loadavg=os.getloadavg(),
                   budget=budget(a), seeds=a.seeds)
        data = load_train_data(a.data, info.spec.size, a.split)
        k = len(info.class_names)
        batches = sample_inputs(data.train.pixels, data.train.labels, info.spec, 64, BATCHES, seed=0)
        refs = {"trained": model_terms(teacher, batches, GRADCAM),
                "random": model_terms(build_candidate(info.arch, k, info.spec, seed=0), batches, GRADCAM)}
        refs["lrp"] = model_terms(teacher, batches[:1], LRP)
        for name in a.candidates.split(","):
            if name not in res["candidates"]:
                print(f"proxies {name}", flush=True)
                res["candidates"][name] = proxies(name, k, info.spec, batches, refs)
                save()
        if a.phase == "all":
            for name in a.candidates.split(","):
                if "distilled" not in res["candidates"][name]:
                    print(f"distil {name}", flush=True)
                    res["candidates"][name]["distilled"] = distilled(name, teacher_dir, a)
                    res["spread"], res["correlations"] = spread(res["candidates"]), correlations(res["candidates"])
                    write_report(res, out)
    res["spread"], res["correlations"] = spread(res["candidates"]), correlations(res["candidates"])
    write_report(res, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
