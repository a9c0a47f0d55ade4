"""Faithfulness, localisation and cost of every LRP and Grad-CAM setting: deletion/insertion AUC, pointing game,
energy in the tumour box and on the background outside the head, lattice factor, and time per batch of 32 maps.

Deletion: pixels are set to black (the background of every slice) in order of decreasing relevance, in
``--patch`` x ``--patch`` squares ranked by their summed map (single pixels make scattered noise that a CNN reacts to
whatever the order), in ``--steps`` equal steps, and the probability of the explained (predicted) class is
recorded; the AUC of that curve over the removed fraction (lower = the map found what the prediction rests on).
Insertion: start from a black image and restore pixels in the same order (higher = better). A random order is the
reference for both.
Localisation: :func:`kdcore.explain.localise` on the first ``--loc-n`` images of the box folder ``--boxes``
(classes in turn), with its baselines and the occlusion check (the same for every map of a model). Lattice: the
lattice factor (:mod:`kdcore.explain.lattice`) of the deletion images' maps at 16 and 32 px.
Time: one batch of 32 maps per default method, next to one forward+backward (cross-entropy, all parameter
gradients) of the same batch, median of ``--repeats``; the ratio is what to compare (the CPU is shared).
``--settings all`` runs every choice of every setting (to choose defaults on a subset), ``default`` the defaults
(``--composite`` another LRP composite in their place, to compare a candidate at full size).
Writes ``bench/results/explain.json`` and ``.md`` (``--out``); ``--report`` rewrites the markdown from the JSON.

    nice -n 10 python -m bench.explain_bench --settings all --n 64 --steps 8 --loc-n 150 --repeats 1 \
        --out bench/results/explain_settings
    OMP_NUM_THREADS=1 nice -n 10 python -m bench.explain_bench --settings default --n 200 --steps 8 --loc-n 750 \
        --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import to_input
from kdcore.data.pack import load_train_data
from kdcore.explain import COMPOSITES, METHODS, explain, lattice_factor, localise
from kdcore.models import load_model
from kdcore.models.predict import predict_logits


def setting_rows(which: str, composite: str | None = None) -> list[tuple[str, dict]]:
    """``(method, settings)`` pairs: every choice of every setting (``all``) or the defaults (``default``, LRP
    with ``composite`` if named), then the random order."""
    if which == "all":
        rows = [(name, {key: value}) for name, m in METHODS.items() for key, choices in m.options.items()
                for value in choices]
    else:
        rows = [(name, {**m.defaults, **({"composite": composite} if name == "lrp" and composite else {})})
                for name, m in METHODS.items()]
    return [*rows, ("random", {})]


def maps_for(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str,
             settings: dict) -> torch.Tensor:
    if method == "random":
        return torch.rand(x.shape[0], *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    return explain(model, x, targets, method, **settings)


@torch.no_grad()
def curves(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, black: float,
           steps: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion curves ``(B, steps + 1)``: probability of ``targets`` after each step.

    Pixels go in ``patch`` x ``patch`` squares ranked by their summed map.
    """
    _b, _, _h, _w = x.shape
    scores = F.avg_pool2d(maps[:, None], patch)
    rank = scores.flatten(1).argsort(1, descending=True).argsort(1).view(scores.shape)  # 0 = most relevant patch
    rank = rank.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    deletion, insertion = [], []
    for k in range(steps + 1):
        top = rank < round(k / steps * scores[0].numel())
        for out, image in ((deletion, torch.where(top, black, x)), (insertion, torch.where(top, x, black))):
            out.append(F.softmax(model(image), 1).gather(1, targets[:, None])[:, 0])
    return torch.stack(deletion, 1), torch.stack(insertion, 1)


def auc(curve: torch.Tensor) -> float:
    """Mean over images of the trapezoid area under ``(B, S + 1)`` curves on [0, 1]."""
    return float(torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1).mean())


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(ref: str, a: argparse.Namespace) -> dict:
    model, info = load_model(ref)
    data = load_train_data(a.data, info.spec.size)
    pixels, labels = data.val.pixels[: a.n], data.val.labels[: a.n]
    black = (0.0 - info.spec.mean) / info.spec.std
    row = {"model": ref, "arch": info.arch, "size": info.spec.size, "n": len(labels)}
    logits = predict_logits(model, pixels, info.spec, a.batch)
    row["val_accuracy_subset"] = float((logits.argmax(1) == labels).float().mean())
    row["settings"] = []
    for method, settings in setting_rows(a.settings, a.composite):
        dels, inss, maps = [], [], []
        for i in range(0, len(labels), a.batch):
            x = to_input(pixels[i : i + a.batch], info.spec)
            targets = logits[i : i + a.batch].argmax(1)
            maps.append(maps_for(model, x, targets, method, settings))
            d, s = curves(model, x, maps[-1], targets, black, a.steps, a.patch)
            dels.append(d)
            inss.append(s)
        entry = {"method": method, "settings": settings, "deletion_auc": auc(torch.cat(dels)),
                 "insertion_auc": auc(torch.cat(inss)),
                 "lattice16": lattice_factor(torch.cat(maps), 16), "lattice32": lattice_factor(torch.cat(maps), 32)}
        if method != "random":
            loc = localise(model, info, a.boxes, method, "predicted", settings, a.loc_n, batch=a.batch)
            loc.pop("images")
            entry["localisation"] = loc
        row["settings"].append(entry)
        print(f"{ref} {method} {settings}: deletion {entry['deletion_auc']:.3f} insertion {entry['insertion_auc']:.3f}"
              + (f" pointing {entry['localisation']['pointing_game']['mean']:.3f}" if method != "random" else ""),
              flush=True)

    x, y = to_input(pixels[: a.batch], info.spec), labels[: a.batch]

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    model.train(False)
    row["forward_backward_s"] = median_time(forward_backward, a.repeats)
    model.zero_grad(set_to_none=True)
    row["time"] = {}
    for method in METHODS:
        seconds = median_time(lambda m=method: explain(model, x, None, m), a.repeats)
        row["time"][method] = {"time_s": seconds, "x_forward_backward": seconds / row["forward_backward_s"]}
    print(f"{ref} timing: {row['forward_backward_s']:.3f}s fwd+bwd, "
          + ", ".join(f"{m} x{t['x_forward_backward']:.2f}" for m, t in row["time"].items()), flush=True)
    return row


TITLE = "LRP and Grad-CAM: faithfulness, localisation and cost"


def _ci(summary: dict) -> str:
    lo, hi = summary["ci95"]
    return f"{summary['mean']:.3f} [{lo:.2f}, {hi:.2f}]"


def _ci_or_dash(loc: dict, metric: str) -> str:
    """``_ci`` of ``loc[metric]``, or a dash in a report measured before the metric existed."""
    return _ci(loc[metric]) if metric in loc else "-"


def markdown(res: dict) -> list[str]:
    """The report's tables: faithfulness, localisation and lattice per model and setting; baselines and the
    occlusion check per model; time per default method."""
    rows, base, times = [], [], []
    for row in res["models"]:
        for e in row["settings"]:
            loc = e.get("localisation")
            where = ([_ci(loc["pointing_game"]), _ci(loc["pointing_game_tol15"]), _ci(loc["energy_in_box"]),
                      _ci_or_dash(loc, "energy_on_background")] if loc else ["", "", "", ""])
            rows.append([row["model"], e["method"], ", ".join(f"{k} {v}" for k, v in e["settings"].items()),
                         f"{e['deletion_auc']:.3f}", f"{e['insertion_auc']:.3f}", *where,
                         f"{e['lattice16']:.2f} / {e['lattice32']:.2f}"])
        loc = next(e["localisation"] for e in row["settings"] if "localisation" in e)
        base.append([row["model"], loc["n"], f"{loc['accuracy']:.3f}", _ci(loc["centre_pointing_game"]),
                     _ci(loc["centre_pointing_game_tol15"]), _ci(loc["uniform_pointing_game"]),
                     _ci_or_dash(loc, "uniform_energy_on_background"),
                     _ci(loc["occlusion_tumour_drop"]), _ci(loc["occlusion_control_drop"]),
                     _ci(loc["occlusion_tumour_larger"])])
        for method, t in row["time"].items():
            times.append([row["model"], method, f"{t['time_s']:.2f} s", f"{t['x_forward_backward']:.2f}",
                          f"{row['forward_backward_s']:.2f} s"])
    return [*md_table(["model", "method", "settings", "deletion AUC (lower better)", "insertion AUC (higher better)",
                       "pointing game [95% CI]", "pointing, box +15%", "energy in box", "energy on background",
                       "lattice 16 / 32 px"], rows),
            "", f"Localisation baselines and the occlusion check (box folder, first {res['loc_n']} images):", "",
            *md_table(["model", "n", "accuracy", "centre point", "centre point, box +15%", "uniform map",
                       "uniform map: energy on background",
                       "occlusion: tumour box drop", "equal-area box drop", "tumour drop larger"], base),
            "", "Per tumour class: where each map points, against the centre point, and whether the model uses the "
            "tumour at all (the occlusion check: the explained class's probability drop when the tumour box is "
            "black, against an equal-area box elsewhere in the head; a map cannot be asked to point where the "
            "model does not look):", "", *per_class_table(res),
            "", f"Time per batch of {res['batch']} maps:", "",
            *md_table(["model", "method (defaults)", "time", "x forward+backward", "forward+backward"], times)]


def per_class_table(res: dict) -> list[str]:
    """Pointing game of every method setting per model and tumour class, the centre point, the occlusion check."""
    rows, labels = [], []
    for row in res["models"]:
        located = [e for e in row["settings"] if "localisation" in e]
        labels = [f"{e['method']} {' '.join(str(v) for v in e['settings'].values())}".strip() for e in located]
        for cls, first in located[0]["localisation"]["per_class"].items():
            rows.append([row["model"], cls, first["n"],
                         *(_ci(e["localisation"]["per_class"][cls]["pointing_game"]) for e in located),
                         _ci(first["centre_pointing_game"]), _ci(first["occlusion_tumour_drop"]),
                         _ci(first["occlusion_control_drop"]), _ci(first["occlusion_tumour_larger"])])
    return md_table(["model", "class", "n", *(f"pointing: {label}" for label in labels), "centre point",
                     "occlusion: tumour box drop", "equal-area box drop", "tumour drop larger"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--student", default="student")
    p.add_argument("--n", type=int, default=200, help="validation images (the split's first N)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--patch", type=int, default=8, help="pixels are removed/added in squares of this side")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--boxes", default="../shared/data/figshare-boxes-dev", help="box folder for localisation")
    p.add_argument("--loc-n", type=int, default=750, help="box images for localisation (classes in turn)")
    p.add_argument("--settings", choices=("default", "all"), default="default")
    p.add_argument("--composite", choices=tuple(COMPOSITES), help="LRP composite of the default rows (the default's)")
    p.add_argument("--out", default=str(RESULTS / "explain"))
    p.add_argument("--report", action="store_true", help="rewrite the markdown from OUT.json; measure nothing")
    a = p.parse_args(argv)
    if a.report:
        res = json.loads(Path(a.out).with_suffix(".json").read_text())
        write(a.out, res, TITLE, markdown(res), note(res))
        return 0
    res = {"command": command("bench.explain_bench", argv), "threads": torch.get_num_threads(),
           "loadavg_start": os.getloadavg(), "batch": a.batch, "steps": a.steps, "patch": a.patch,
           "loc_n": a.loc_n, "settings": a.settings,
           "models": [bench_model(ref, a) for ref in (a.teacher, a.student)]}
    res["loadavg_end"] = os.getloadavg()
    write(a.out, res, TITLE, markdown(res), note(res))
    return 0


def note(res: dict) -> str:
    return (f" (threads {res['threads']}, load average {res['loadavg_start'][0]:.1f} at start); batch {res['batch']}, "
            f"{res['steps']} deletion/insertion steps of {res['patch']}x{res['patch']} patches, black baseline.")


if __name__ == "__main__":
    raise SystemExit(main())
