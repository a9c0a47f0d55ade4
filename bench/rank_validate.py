"""Do the training-free proxies predict distilled accuracy here? Every proxy against the same KD recipe, per candidate.

1. A snapshot of the teacher is copied to ``RUNS/teacher`` (a training run may keep overwriting its ``best/``).
2. Proxies: every proxy of :data:`kdcore.rank.proxies.PROXIES` scores every candidate as ``kdcore rank`` does (one
   stratified batch of ``--n`` images at the teacher's resolution, ``--inits`` random initialisations), with its
   wall time per candidate (``flops`` and ``latency`` share one measurement, the candidate table's).
3. Every candidate is distilled with the same recipe: plain logit KD from the teacher (``ce + kd``, T = 4, teacher
   logits cached), at ``--size`` px for ``--epochs`` epochs, once per seed of ``--seeds``. The target is the mean
   over seeds of the final epoch's validation accuracy; the seed spread is kept. ``--only NAME/SEED`` runs one
   distillation alone (to run several side by side).
4. Per proxy, over the distilled candidates: Kendall tau and Spearman rho, each with a 95% bootstrap interval over
   candidates; one- and two-sided permutation p-values for tau (shuffled targets); the top-k hit rate (the share of the
   proxy's top 3 within the true top 5); the library default it implies (:func:`kdcore.rank.proxies.default_proxy`).
   ``--publish`` ships the figures with the library (:mod:`kdcore.rank.validation`).

Resumable: proxies already in the JSON are kept, a finished distillation is read from its ``result.json`` and a
half-done one continues from its checkpoint; ``--parallel N`` distils the missing runs as N processes. Writes
``OUT.json``, ``OUT.md`` and ``OUT_scatter.html`` / ``.png`` (accuracy against each proxy, error bars = seed std).

    nohup nice -n 10 python -m bench.rank_validate > runs/rank-validate.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from bench.parallel import run_in_parallel
from bench.report import RESULTS, command, md_table, write
from kdcore.data.pack import load_train_data
from kdcore.distill import make_config, run
from kdcore.engine.checkpoint import has_checkpoint
from kdcore.engine.loop import run_to_end
from kdcore.models import load_model, resolve_model_path
from kdcore.rank.candidates import CANDIDATES, candidate_cost, candidate_table
from kdcore.rank.proxies import BAR_P, BAR_TAU, PROXIES, default_proxy, probe_batch, rank
from kdcore.rank.validation import VALIDATION_FILE

TOP_K, TRUE_TOP = 3, 5


def snapshot_teacher(src: str, dst: Path) -> Path:
    """Copy the model ``src`` (a folder or ``teacher``) to ``dst`` once; later calls reuse the copy."""
    if not (dst / "model.safetensors").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "README.md"):
            if (resolve_model_path(src) / name).is_file():
                shutil.copy2(resolve_model_path(src) / name, dst / name)
    return dst


def budget(a: argparse.Namespace) -> dict:
    """The recipe every candidate gets: plain logit KD (ce + kd, T = 4) at ``--size`` px."""
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
    t0 = time.perf_counter()
    final = run_to_end(run(make_config(None, overrides=overrides), a.data, out, resume=has_checkpoint(out),
                           split=a.split))
    curve = [h["val_accuracy"] for h in final["history"]]
    result = {"budget": b, "seed": seed, "final_accuracy": curve[-1], "best_accuracy": final["best"]["accuracy"],
              "curve": curve, "train_time_s": final["train_time_s"], "wall_time_s": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result))
    return result


def distilled(name: str, teacher: Path, a: argparse.Namespace) -> dict:
    """Mean and std over seeds of the candidate's final validation accuracy, with the runs."""
    runs = [distill(name, seed, teacher, a) for seed in a.seeds]
    accs = [r["final_accuracy"] for r in runs]
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "epoch_s": float(np.mean([r["train_time_s"] / len(r["curve"]) for r in runs])), "runs": runs}


def proxy_scores(proxies: list[str], names: list[str], teacher: torch.nn.Module, info, data,
                 a: argparse.Namespace) -> dict:
    """``{proxy: {candidate: {score, score_std, seconds}}}`` as ``kdcore rank`` computes them."""
    probe = probe_batch(data.train.pixels, data.train.labels, info.spec, len(info.class_names), teacher, a.n)
    candidate_cost.cache_clear()  # the flops proxy pays for the candidate table's measurement
    out = {}
    for proxy in proxies:
        print(f"proxy {proxy}", flush=True)
        out[proxy] = {r.pop("name"): r for r in rank(names, probe, proxy, a.inits)}
    return out


def agreement(values: list[float], target: list[float], rounds: int, seed: int = 0) -> dict:
    """Kendall tau and Spearman rho of ``values`` against ``target`` with 95% bootstrap intervals over candidates,
    the permutation p-values of tau (one-sided: as high by chance; two-sided: as far from zero) and the top-k hit
    rate."""
    v, t = np.asarray(values), np.asarray(target)
    rng = np.random.default_rng(seed)
    tau, rho = float(kendalltau(v, t)[0]), float(spearmanr(v, t)[0])
    boot = []
    for _ in range(rounds):
        i = rng.integers(0, len(v), len(v))
        if np.ptp(v[i]) > 0 and np.ptp(t[i]) > 0:
            boot.append((kendalltau(v[i], t[i])[0], spearmanr(v[i], t[i])[0]))
    b = np.asarray(boot) if boot else np.full((1, 2), np.nan)
    null = np.array([kendalltau(v, rng.permutation(t))[0] for _ in range(rounds)])
    top = set(np.argsort(-v, kind="stable")[:TOP_K]) & set(np.argsort(-t, kind="stable")[:TRUE_TOP])
    return {"tau": tau, "tau_low": float(np.nanpercentile(b[:, 0], 2.5)),
            "tau_high": float(np.nanpercentile(b[:, 0], 97.5)), "rho": rho,
            "rho_low": float(np.nanpercentile(b[:, 1], 2.5)), "rho_high": float(np.nanpercentile(b[:, 1], 97.5)),
            "p": float((1 + np.sum(null >= tau)) / (1 + rounds)),
            "p_two_sided": float((1 + np.sum(np.abs(null) >= abs(tau))) / (1 + rounds)),
            "top_k_hit": len(top) / min(TOP_K, len(v)), "n": len(v)}


def correlations(res: dict, rounds: int, names: list[str] | None = None) -> dict:
    """Per proxy, :func:`agreement` over the distilled candidates (or those of ``names``; three or more, not all
    equally accurate)."""
    done = sorted(names if names is not None else res["distilled"])
    target = [res["distilled"][n]["accuracy"] for n in done]
    if len(done) < 3 or np.ptp(target) == 0:
        return {}
    return {p: agreement([s[n]["score"] for n in done], target, rounds) for p, s in res["proxies"].items()
            if all(n in s for n in done)}


def within_families(res: dict, rounds: int, min_size: int = 5) -> dict:
    """``{family: {proxy: agreement}}`` over the distilled candidates of each family (:data:`CANDIDATES`) with at
    least ``min_size`` of them: does a proxy order one family's variants, whatever it does across families?"""
    families: dict[str, list[str]] = {}
    for n in res["distilled"]:
        families.setdefault(CANDIDATES.get(n, "timm"), []).append(n)
    return {f: c for f, names in sorted(families.items()) if len(names) >= min_size
            and (c := correlations(res, rounds, names))}


def family_table(res: dict) -> list[str]:
    """Kendall tau and its one-sided p of every proxy within each family of :func:`within_families`."""
    fams = res.get("within_families", {})
    if not fams:
        return []
    proxies = sorted(next(iter(fams.values())), key=lambda p: -res["correlations"][p]["tau"])
    return ["", "## Within one family", "", "Kendall tau [one-sided permutation p] over the variants of each family "
            "with at least 5 distilled candidates (too few for a bootstrap interval). Across families (above) and "
            "within one are different questions: which architecture, and which width of it.", "",
            *md_table(["proxy", *(f"{f} ({next(iter(c.values()))['n']})" for f, c in fams.items())],
                      [[p, *(f"{c[p]['tau']:+.3f} [{c[p]['p']:.3f}]" for c in fams.values())] for p in proxies])]


def validation_entry(stats: dict, seconds: dict[str, float]) -> dict:
    """The form :data:`kdcore.rank.proxies.VALIDATION` holds."""
    return {p: {"tau": round(s["tau"], 3), "low": round(s["tau_low"], 3), "high": round(s["tau_high"], 3),
                "p": round(s["p"], 4), "n": s["n"], "seconds": round(seconds[p], 3)} for p, s in stats.items()}


def publish(res: dict, path: Path) -> None:
    """The library's :mod:`kdcore.rank.validation` file: the recipe, each proxy's agreement, each candidate's
    distilled accuracy (mean and std over seeds)."""
    b = res["budget"]
    recipe = (f"plain logit KD (ce + kd, T {b['distill']['temperature']:g}) from the teacher "
              f"`{res['teacher']['source']}` at {b['size']} px, {b['train']['epochs']} epochs"
              + (f" x {b['train']['max_images']} images" if b["train"]["max_images"] else "")
              + f", batch {b['train']['batch_size']}, lr {b['train']['lr']:g}; final-epoch validation accuracy, mean "
              f"and std over seeds {', '.join(map(str, res['seeds']))}")
    distilled = {n: {"accuracy": round(d["accuracy"], 4), "std": round(d["std"], 4)}
                 for n, d in res["distilled"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"teacher": res["teacher"]["source"], "recipe": recipe, "command": res["command"],
                                "proxies": res["validation"],
                                "distilled": distilled}, indent=1) + "\n")


def write_report(res: dict, out: Path) -> None:
    """The JSON, the markdown report and (three or more candidates distilled) the scatter plots."""
    stats, cands = res.get("correlations", {}), res["candidates"]
    seconds = {p: float(np.median([r["seconds"] for r in s.values()])) for p, s in res["proxies"].items()}
    body = [f"## Proxies against distilled accuracy ({len(res['distilled'])} of {len(cands)} candidates distilled)",
            "", f"Target: mean over seeds {res['seeds']} of the final validation accuracy. Intervals: 95% bootstrap "
            "over candidates; p: one-sided permutation test of tau (a tau this high by chance); p, two-sided: a tau "
            f"this far from zero by chance; top-{TOP_K} hit: share of the proxy's top {TOP_K} within the true top "
            f"{TRUE_TOP}. The bar: tau >= {BAR_TAU} with p < {BAR_P}.", "",
            *md_table(["proxy", "Kendall tau [95%]", "p", "p, two-sided", "Spearman rho [95%]", f"top-{TOP_K} hit",
                       "s per candidate (median / max)"],
                      [[p, f"{s['tau']:+.3f} [{s['tau_low']:+.2f}, {s['tau_high']:+.2f}]", f"{s['p']:.4f}",
                        f"{s['p_two_sided']:.4f}",
                        f"{s['rho']:+.3f} [{s['rho_low']:+.2f}, {s['rho_high']:+.2f}]", f"{s['top_k_hit']:.2f}",
                        f"{seconds[p]:.2f} / {max(r['seconds'] for r in res['proxies'][p].values()):.2f}"]
                       for p, s in sorted(stats.items(), key=lambda kv: -kv[1]["tau"])])]
    if stats:
        res["validation"] = validation_entry(stats, seconds)
        res["suggested_default"] = default_proxy(res["validation"])
        body += ["", f"Default (best tau, a tie to the cheaper): **{res['suggested_default']}**. `--publish` "
                 "ships these figures with the library (`kdcore/bundled/ranking/validation.json`)."]
    rows = [[n, f"{c['params'] / 1e6:.2f}", f"{c['flops'] / 1e6:.0f}"]
            + [f"{res['proxies'][p][n]['score']:.4g}" if n in res["proxies"][p] else "-" for p in res["proxies"]]
            + ([f"{res['distilled'][n]['accuracy']:.4f} ± {res['distilled'][n]['std']:.4f}"]
               if n in res["distilled"] else ["-"]) for n, c in sorted(cands.items(), key=lambda kv: kv[1]["params"])]
    body += [*family_table(res), "", "## Per candidate", "",
             *md_table(["candidate", "params (M)", "MFLOPs", *res["proxies"], "accuracy ± seed std"], rows),
             *settling(res)]
    t = res["teacher"]
    write(out, res, "Training-free proxies against distilled accuracy", body,
          f"  \nTeacher: `{t['source']}` ({t['arch']}); proxies at {res['size']} px on N = {res['n']}, "
          f"{res['inits']} init(s); recipe per candidate: `{json.dumps(res['budget'])}`; {res['threads']} threads, "
          f"load average {res['loadavg'][0]:.1f} at the start.")
    if len(res["distilled"]) >= 3:
        plot(res, out)


def settling(res: dict, back: int = 5) -> list[str]:
    """Have the targets flattened? Per distilled candidate the mean over seeds of the validation accuracy ``back``
    epochs before the end and at the end, the change, and the best epoch's (chosen on validation, secondary); and
    Kendall tau between the candidates' order then and at the end."""
    names = sorted(res["distilled"], key=lambda n: -res["distilled"][n]["accuracy"])
    if len(names) < 3:
        return []
    curves = {n: np.array([r["curve"] for r in res["distilled"][n]["runs"]]) for n in names}
    epochs = min(c.shape[1] for c in curves.values())
    if epochs <= back:
        return []
    before = {n: float(c[:, epochs - 1 - back].mean()) for n, c in curves.items()}
    end = {n: res["distilled"][n]["accuracy"] for n in names}
    tau = float(kendalltau([before[n] for n in names], [end[n] for n in names])[0])
    rows = [[n, f"{before[n]:.4f}", f"{end[n]:.4f}", f"{end[n] - before[n]:+.4f}",
             f"{float(curves[n].max(1).mean()):.4f}"] for n in names]
    return ["", f"## Have the accuracies flattened? (epoch {epochs - back} against the final epoch {epochs})", "",
            f"Mean over seeds. Kendall tau between the candidates' order at epoch {epochs - back} and at epoch "
            f"{epochs}: {tau:+.3f}; median change over the last {back} epochs "
            f"{float(np.median([end[n] - before[n] for n in names])):+.4f}.", "",
            *md_table(["candidate", f"epoch {epochs - back}", f"epoch {epochs} (the target)", "change",
                       "best epoch (chosen on validation)"], rows)]


def plot(res: dict, out: Path) -> None:
    """Distilled accuracy (error bars: seed std) against each proxy: plotly HTML and a matplotlib PNG."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = sorted(res["distilled"])
    proxies = [p for p in res["proxies"] if all(n in res["proxies"][p] for n in names)]
    acc = [res["distilled"][n]["accuracy"] for n in names]
    err = [res["distilled"][n]["std"] for n in names]
    cols = min(4, len(proxies))
    rows = math.ceil(len(proxies) / cols)
    stats = res.get("correlations", {})
    titles = [f"{p} (tau {stats[p]['tau']:+.2f})" if p in stats else p for p in proxies]

    def xs(p: str) -> tuple[list[float], bool]:
        x = [res["proxies"][p][n]["score"] for n in names]
        return x, min(x) > 0 and max(x) > 1000 * min(x)

    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True)
    for i, p in enumerate(proxies):
        x, log = xs(p)
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=x, y=acc, error_y=dict(type="data", array=err), mode="markers", text=names,
                                 hovertemplate="%{text}<br>%{x:.4g}<br>acc %{y:.4f}<extra></extra>",
                                 showlegend=False), row=r, col=c)
        fig.update_xaxes(type="log" if log else "linear", row=r, col=c)
    fig.update_yaxes(title_text="distilled val accuracy", col=1)
    fig.update_layout(width=1400, height=330 * rows, title="Proxies vs distilled accuracy (error bars: seed std)")
    fig.write_html(out.parent / (out.name + "_scatter.html"), include_plotlyjs="cdn")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), sharey=True, squeeze=False)
    for ax, p, title in zip(axes.flat, proxies, titles):
        x, log = xs(p)
        ax.errorbar(x, acc, yerr=err, fmt="o", ms=4, capsize=2)
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log" if log else "linear")
    for ax in axes.flat[len(proxies):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("distilled val accuracy")
    f.tight_layout()
    f.savefig(out.parent / (out.name + "_scatter.png"), dpi=100)
    plt.close(f)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--split", default=None)
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--proxies", default=",".join(PROXIES))
    p.add_argument("--runs", default="runs/rank-validate")
    p.add_argument("--phase", choices=["all", "proxies", "report"], default="all",
                   help="proxies: scores only (no distillation); report: rewrite the report from the JSON")
    p.add_argument("--only", default=None, help="distil one candidate NAME/SEED (writes its result.json) and stop")
    p.add_argument("--parallel", type=int, default=1,
                   help="distil the missing runs as this many processes at once (whole seeds first, within a seed "
                        "the slowest candidate first), the CPU threads shared among them")
    p.add_argument("--n", type=int, default=64, help="proxies: images in the batch")
    p.add_argument("--inits", type=int, default=1, help="proxies: random initialisations per candidate")
    p.add_argument("--size", type=int, default=64, help="recipe: resolution of the student")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-images", type=int, default=None, help="recipe: image budget per epoch")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=2000, help="bootstrap and permutation rounds")
    p.add_argument("--out", default=str(RESULTS / "rank_validate"))
    p.add_argument("--publish", nargs="?", const=str(VALIDATION_FILE), default=None, metavar="PATH",
                   help="also write the validation the library ships (default PATH: %(const)s)")
    a = p.parse_args(argv)
    a.seeds = [int(x) for x in a.seeds.split(",")]
    a.proxies = a.proxies.split(",")
    names = a.candidates.split(",")
    out, runs = Path(a.out), Path(a.runs)
    teacher_dir = snapshot_teacher(a.teacher, runs / "teacher")
    if a.only:
        name, seed = a.only.split("/")
        distill(name, int(seed), teacher_dir, a)
        return 0
    json_path = out.with_suffix(".json")
    res = json.loads(json_path.read_text()) if json_path.is_file() else {"candidates": {}, "proxies": {},
                                                                         "distilled": {}}
    if a.phase != "report":
        teacher, info = load_model(teacher_dir)
        res.update(command=command("bench.rank_validate", argv), n=a.n, inits=a.inits, size=info.spec.size,
                   budget=budget(a), seeds=a.seeds, threads=torch.get_num_threads(), loadavg=os.getloadavg(),
                   teacher={"source": a.teacher, "arch": info.arch})
        k = len(info.class_names)
        res["candidates"] |= {r.pop("name"): r for r in candidate_table(info.spec, names, num_classes=k)}
        missing = [q for q in a.proxies if set(names) - set(res["proxies"].get(q, {}))]
        if missing:
            data = load_train_data(a.data, info.spec.size, a.split)
            res["proxies"] |= proxy_scores(missing, names, teacher, info, data, a)
        out.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=1))
        if a.phase == "all" and a.parallel > 1:
            todo = [f"{n}/{seed}" for seed in a.seeds
                    for n in sorted(names, key=lambda n: -res["candidates"][n]["latency_ms"])
                    if not (runs / n / f"seed{seed}" / "result.json").is_file()]
            run_in_parallel("bench.rank_validate", [*(sys.argv[1:] if argv is None else argv), "--parallel", "1"],
                            todo, a.parallel)
        if a.phase == "all":
            for name in names:
                if name not in res["distilled"]:
                    print(f"distil {name}", flush=True)
                    res["distilled"][name] = distilled(name, teacher_dir, a)
                    json_path.write_text(json.dumps(res, indent=1))  # progress: a cut validation resumes here
    res["correlations"] = correlations(res, a.rounds)
    res["within_families"] = within_families(res, a.rounds)
    write_report(res, out)
    if a.publish:
        if "validation" not in res:
            sys.exit("nothing to publish: fewer than three candidates distilled")
        publish(res, Path(a.publish))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
