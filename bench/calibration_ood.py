"""Calibrated probabilities and the out-of-distribution check of fitted models, on the reference data.

Per model: ECE (15 bins) and NLL of validation before and after its fitted temperature, accuracy (unchanged), and
per kind of non-MRI image the share the check flags and the AUROC against validation, for both candidate scores
(energy, Mahalanobis) and the one the model uses. Two groups of kinds: the ones ``kdcore calibrate`` chose the
score with (:func:`kdcore.models.ood.synthetic_ood`, same seed and count) and held-out kinds nothing was fitted or
chosen on (below), and MRI slices turned by 90 degrees on their own. The thresholds are the models' stored ones (98th
percentile of validation).

    python -m bench.calibration_ood --data DATA [--models teacher,student,student-tiny] \
        [--out bench/results/calibration_ood]
"""

from __future__ import annotations

import argparse
import io
import os

import matplotlib
import numpy as np
import torch
from PIL import Image

from bench.report import command, md_table, relative, write
from kdcore.data.imageio import square_resize, to_grey_array
from kdcore.data.pack import load_train_data
from kdcore.engine.calibrate import training_split
from kdcore.engine.metrics import auroc, reliability
from kdcore.models import load_model
from kdcore.models.calibration import nll, temperature
from kdcore.models.ood import OOD_SCORES, fit_gaussian, logits_and_features, scores, synthetic_ood

matplotlib.use("Agg")
PHOTOS = ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")  # matplotlib's sample images
FIT_PER_KIND = 200  # as kdcore calibrate
#: The groups of kinds reported apart: the ones the score was chosen on, held-out non-MRI images and zooms, and
#: brain slices turned by 90 degrees (still brain MRI, in an orientation the data lacks: not counted as OOD).
GROUPS = ("fitted", "held_out", "rotated")


def _photos(size: int) -> list[np.ndarray]:
    """matplotlib's sample images as greyscale ``(H, W)`` in [0, 1]."""
    from matplotlib import cbook

    out = []
    for name in PHOTOS:
        with cbook.get_sample_data(name) as f:
            out.append(to_grey_array(Image.open(io.BytesIO(f.read()))))
    return out


def _chart(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random line or bar chart rendered with matplotlib, uint8 ``(size, size)``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=size // 2)
    x = np.arange(12)
    if rng.random() < 0.5:
        ax.plot(x, rng.normal(0, 1, (12, 3)).cumsum(0))
    else:
        ax.bar(x, rng.random(12))
    ax.set_title(str(rng.choice(["sales", "loss", "temperature", "votes"])))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white" if rng.random() < 0.5 else "black")
    plt.close(fig)
    return square_resize(to_grey_array(Image.open(buf)), size)


def held_out_ood(mri: torch.Tensor, n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Kinds nothing is fitted or chosen on: kind -> uint8 ``(M, S, S)``, from MRI slices ``(N, S, S)``.

    ``photo``: matplotlib's sample images and their mirror images; ``photo_crop``: random crops of them (20-60%
    of the side); ``chart``: rendered plots; ``mri_crop``: extreme zooms (a random window of a quarter of the side)
    into MRI slices; ``mri_rot90``: MRI slices turned by 90 degrees.
    """
    rng = np.random.default_rng(seed)
    size = mri.shape[-1]
    photos = _photos(size)
    crops = []
    for _ in range(n):
        p = photos[rng.integers(len(photos))]
        side = int(min(p.shape) * rng.uniform(0.2, 0.6))
        y, x = rng.integers(0, p.shape[0] - side + 1), rng.integers(0, p.shape[1] - side + 1)
        crops.append(square_resize(p[y : y + side, x : x + side], size))
    pick = torch.from_numpy(rng.choice(len(mri), n, replace=len(mri) < n))
    win = size // 4
    zooms = []
    for i in pick.tolist():
        y, x = rng.integers(size // 8, size - win - size // 8, 2)
        zooms.append(square_resize(mri[i, y : y + win, x : x + win].numpy() / 255.0, size))
    sets = {
        "photo": [square_resize(p, size) for p in photos] + [square_resize(p[:, ::-1], size) for p in photos],
        "photo_crop": crops,
        "chart": [_chart(rng, size) for _ in range(n)],
        "mri_crop": zooms,
        "mri_rot90": list(torch.rot90(mri[pick], 1, (1, 2)).numpy()),
    }
    return {k: torch.from_numpy(np.stack(v).astype(np.uint8)) for k, v in sets.items()}


def measure(ref: str, data: str, n_held_out: int) -> dict:
    """Calibration and OOD figures of one fitted model (see the module docstring)."""
    model, info = load_model(ref)
    if not info.calibration or not info.ood:
        raise SystemExit(f"{ref}: not calibrated; run `python -m kdcore calibrate --model {ref} --data DATA` first")
    d = load_train_data(data, info.spec.size, training_split(info))
    remap = torch.tensor([info.class_names.index(c) for c in d.class_names])
    t = temperature(info)
    val = logits_and_features(model, d.val.pixels, info.spec)
    y = remap[d.val.labels]
    cal = {"temperature": t, "accuracy_before": float((val[0].argmax(1) == y).float().mean()),
           "accuracy_after": float(((val[0] / t).argmax(1) == y).float().mean())}
    for when, s in (("before", 1.0), ("after", t)):
        rel = reliability(y.numpy(), (val[0] / s).softmax(1).numpy())
        cal |= {f"ece_{when}": rel["ece"], f"nll_{when}": nll(val[0], y, s), f"bins_{when}": rel["bins"]}
    stats = fit_gaussian(logits_and_features(model, d.train.pixels, info.spec)[1], remap[d.train.labels],
                         len(info.class_names))
    held_out = held_out_ood(d.val.pixels, n_held_out)
    groups = {"fitted": synthetic_ood(d.val.pixels, FIT_PER_KIND),
              "held_out": {k: v for k, v in held_out.items() if k != "mri_rot90"},
              "rotated": {"mri_rot90": held_out["mri_rot90"]}}
    outs = {g: {k: logits_and_features(model, px, info.spec) for k, px in kinds.items()} for g, kinds in groups.items()}
    ood = {"score": info.ood["score"], "threshold": info.ood["threshold"], "by_score": {}}
    for kind in OOD_SCORES:
        v = scores(kind, *val, t, stats)
        thr = info.ood["threshold"] if kind == info.ood["score"] else float(np.quantile(v, 0.98, method="higher"))
        row = {"threshold": thr, "val_flagged": float((v > thr).mean())}
        for g, kinds in outs.items():
            o = {k: scores(kind, *out, t, stats) for k, out in kinds.items()}
            every = np.concatenate(list(o.values()))
            row[g] = {"auroc": auroc(v, every), "flagged": float((every > thr).mean()),
                      "kinds": {k: {"n": len(s), "auroc": auroc(v, s), "flagged": float((s > thr).mean())}
                                for k, s in o.items()}}
        ood["by_score"][kind] = row
    return {"model": relative(info.path), "arch": info.arch, "val_images": len(y), "split": info.calibration.get(
        "fitted_on"), "calibration": cal, "ood": ood}


def report_lines(results: dict[str, dict]) -> list[str]:
    """The markdown tables: calibration per model, then OOD per model, score and kind."""
    lines = ["## Calibration (validation, 15-bin ECE)", ""]
    lines += md_table(["model", "T", "accuracy", "ECE before", "ECE after", "NLL before", "NLL after"], [
        [name, f"{c['temperature']:.3f}", f"{c['accuracy_before']:.4f} → {c['accuracy_after']:.4f}",
         f"{c['ece_before']:.4f}", f"{c['ece_after']:.4f}", f"{c['nll_before']:.4f}", f"{c['nll_after']:.4f}"]
        for name, c in ((n, r["calibration"]) for n, r in results.items())])
    for name, r in results.items():
        o = r["ood"]
        lines += ["", f"## OOD check: {name} (uses the {o['score']} score, threshold {o['threshold']:.3f})", ""]
        rows = []
        for kind, row in o["by_score"].items():
            mark = " (used)" if kind == o["score"] else ""
            rows.append([f"{kind}{mark}", "validation", "", "", f"{row['val_flagged']:.1%}"])
            for g in GROUPS:
                for k, m in row[g]["kinds"].items():
                    rows.append([f"{kind}{mark}", g.replace("_", "-"), k, f"{m['auroc']:.4f} (n={m['n']})",
                                 f"{m['flagged']:.1%}"])
                rows.append([f"{kind}{mark}", g.replace("_", "-"), "**all**", f"**{row[g]['auroc']:.4f}**",
                             f"**{row[g]['flagged']:.1%}**"])
        lines += md_table(["score", "group", "kind", "AUROC vs validation", "flagged"], rows)
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the reference dataset (one sub-folder per class)")
    p.add_argument("--models", default="teacher,student,student-tiny")
    p.add_argument("--held-out", type=int, default=100, help="images per held-out kind (photo: always 6)")
    p.add_argument("--out", default="bench/results/calibration_ood")
    a = p.parse_args(argv)
    results = {name: measure(name, a.data, a.held_out) for name in a.models.split(",")}
    result = {"command": command("bench.calibration_ood", argv), "models": results}
    splits = sorted({str(r["split"]).split(":")[0] for r in results.values()})
    note = (f"  \nMachine: {os.cpu_count()} CPU cores. Validation = the validation side of the split each model was "
            f"trained with ({', '.join(splits)}); the v2 split has no copy of a training slice on that side.")
    write(a.out, result, "Calibration and out-of-distribution check", report_lines(results), note)


if __name__ == "__main__":
    main()
