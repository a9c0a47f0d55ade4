"""Which strided layers draw the LRP stride lattice: the default composite with one kind of strided layer destrided
at a time, its lattice factor and where its maps point.

    python -m bench.lrp_lattice_sources --models teacher,student --n 150

zennit's ``epsilon-plus-flat`` reads a strided layer unevenly, and the lattice factor
(:mod:`kdcore.explain.lattice`) measures the pile-up at 16 and 32 px. Each variant below reads only the named kind of
strided convolution as stride 1 then subsampling (:func:`kdcore.explain.lrp.destrided_relevance`) and leaves every
other rule as it is, so the variant whose lattice falls names the source: ``shortcuts`` (1x1 strided convolutions,
ResNet-18's downsampling shortcuts), ``block convolutions`` (strided 3x3 and larger convolutions after the stem),
``stem`` (the first convolution's flat rule); ``shortcuts and stem`` and ``all`` are registered composites. Per
model and variant, on the first ``--n`` slices of the box folder (classes in turn), the maps of the predicted class:
lattice factors, pointing game, energy in the box and on the black background with 95% bootstrap intervals
(:mod:`kdcore.explain.localise`), and the share of the explained logit that reaches the input (the rest goes to
the biases). Writes ``bench/results/lrp_lattice_sources.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import to_input
from kdcore.explain import lattice_factor, lrp_map
from kdcore.explain.localise import boxed_batch, find_boxed_images, image_scores, summarise
from kdcore.explain.lrp import DESTRIDING, Destriding, epsilon_plus_flat
from kdcore.models import load_model

#: Name -> destriding: the default composite's, each kind of strided layer destrided alone, and the registered ones
VARIANTS = {
    "none (epsilon-plus-flat)": DESTRIDING["epsilon-plus-flat"],
    "shortcuts (1x1)": Destriding(False, lambda m: tuple(m.kernel_size) == (1, 1)),
    "block convolutions (3x3 and larger)": Destriding(False, lambda m: tuple(m.kernel_size) != (1, 1)),
    "stem": Destriding(True, lambda m: False),
    "shortcuts (1x1) and stem (epsilon-plus-flat-destrided-shortcuts-stem)":
        DESTRIDING["epsilon-plus-flat-destrided-shortcuts-stem"],
    "all (epsilon-plus-flat-destrided)": DESTRIDING["epsilon-plus-flat-destrided"],
}


def measure(ref: str, boxes: str, n: int, batch: int = 32) -> dict:
    """Per variant: lattice factors, pointing game and energy in the box on ``n`` box slices."""
    model, info = load_model(ref)
    items = find_boxed_images(boxes, [str(c) for c in info.class_names], n)
    batches = []
    for start in range(0, len(items), batch):
        _, pixels, masks, tols = boxed_batch(items[start : start + batch], info.spec.size)
        x = to_input(torch.tensor(np.stack(pixels)), info.spec)
        with torch.no_grad():
            logits = model.eval()(x)
        targets = logits.argmax(1)
        batches.append((x, targets, logits.gather(1, targets[:, None]).squeeze(1), masks, tols, pixels))
    out = {}
    for name, destriding in VARIANTS.items():
        maps = [lrp_map(model, x, targets, epsilon_plus_flat(destriding)) for x, targets, *_ in batches]
        kept = torch.cat([m.sum((1, 2)) / logit for m, (_, _, logit, *_) in zip(maps, batches)])
        records = [image_scores(m.numpy(), mask, tol, px) for (*_, masks, tols, pixels), ms in zip(batches, maps)
                   for m, mask, tol, px in zip(ms, masks, tols, pixels)]
        s = summarise(records)
        every = torch.cat(maps)
        out[name] = {"lattice16": lattice_factor(every, 16), "lattice32": lattice_factor(every, 32),
                     "relevance_kept": float(kept.mean()),
                     **{k: s[k] for k in ("pointing_game", "energy_in_box", "energy_on_background",
                                          "uniform_energy_on_background")}}
    return {"model": ref, "arch": info.arch, "n": len(items), "variants": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="teacher,student")
    p.add_argument("--boxes", default="../shared/data/figshare-boxes-dev", help="box folder (class folders)")
    p.add_argument("--n", type=int, default=150, help="box slices (classes in turn)")
    p.add_argument("--out", default=str(RESULTS / "lrp_lattice_sources"))
    a = p.parse_args(argv)
    res = {"command": command("bench.lrp_lattice_sources", argv),
           "models": [measure(ref, a.boxes, a.n) for ref in a.models.split(",")]}

    def ci(s: dict) -> str:
        return f"{s['mean']:.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"

    rows = [[m["model"], m["arch"], m["n"], name, f"{v['lattice16']:.2f}", f"{v['lattice32']:.2f}",
             ci(v["pointing_game"]), ci(v["energy_in_box"]), ci(v["energy_on_background"]),
             f"{v['uniform_energy_on_background']['mean']:.3f}", f"{v['relevance_kept']:.3f}"]
            for m in res["models"] for name, v in m["variants"].items()]
    body = md_table(["model", "arch", "slices", "strided layers destrided", "lattice 16 px", "lattice 32 px",
                     "pointing game [95% CI]", "energy in box [95% CI]", "energy on the background [95% CI]",
                     "background's share of the input", "share of the logit the map keeps"], rows)
    write(a.out, res, "Sources of the LRP stride lattice: one kind of strided layer destrided at a time", body,
          " (LRP of the predicted class, epsilon-plus-flat rules otherwise; 1 = no lattice)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
