"""Which strided layers draw the LRP stride lattice: the default composite with one kind of strided layer destrided
at a time, its lattice factor and where its maps point.

    python -m bench.lrp_lattice_sources --models teacher,student --n 150

zennit's ``epsilon-plus-flat`` reads a strided layer unevenly, and the lattice factor
(:mod:`kdcore.explain.lattice`) measures the pile-up at 16 and 32 px. Each variant below reads only the named kind of
strided convolution as stride 1 then subsampling (:func:`kdcore.explain.lrp.destrided_relevance`) and leaves every
other rule as it is, so the variant whose lattice falls names the source: ``shortcuts`` (1x1 strided convolutions,
ResNet-18's downsampling shortcuts), ``block convolutions`` (strided 3x3 and larger convolutions after the stem; also
only those before the last downsampling, which read a grid finer than the coarsest), ``stem`` (the first
convolution's flat rule); ``shortcuts and stem``, ``all`` and ``all but the last downsampling's block convolutions``
are registered composites. Per model and variant, on the first ``--n`` slices of the box folder (classes in turn),
the maps of the predicted class: lattice factors and their layout floors (also on as many validation images,
:func:`kdcore.explain.layout_floor`), pointing game, energy in the box and on the black background with
95% bootstrap intervals (:mod:`kdcore.explain.localise`), and the share of the explained logit that reaches the
input (the rest goes to the biases). Writes ``bench/results/lrp_lattice_sources.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import to_input
from kdcore.data.pack import load_train_data
from kdcore.explain import lattice_factor, layout_floor, lrp_map
from kdcore.explain.localise import boxed_batch, find_boxed_images, image_scores, summarise
from kdcore.explain.lrp import DESTRIDING, Destriding, epsilon_plus_flat, never, one_by_one
from kdcore.models import load_model


def _block(module: torch.nn.Module) -> bool:
    return not one_by_one(module)


#: Name -> destriding: the default composite's, each kind of strided layer destrided alone, and the registered ones
VARIANTS = {
    "none (epsilon-plus-flat)": DESTRIDING["epsilon-plus-flat"],
    "shortcuts (1x1)": Destriding(False, one_by_one, one_by_one),
    "block convolutions (3x3 and larger)": Destriding(False, _block, _block),
    "block convolutions before the last downsampling": Destriding(False, _block, never),
    "stem": Destriding(True, never, never),
    "shortcuts (1x1) and stem (epsilon-plus-flat-destrided-shortcuts-stem)":
        DESTRIDING["epsilon-plus-flat-destrided-shortcuts-stem"],
    "all (epsilon-plus-flat-destrided)": DESTRIDING["epsilon-plus-flat-destrided"],
    "all but the last downsampling's block convolutions (epsilon-plus-flat-destrided-but-last)":
        DESTRIDING["epsilon-plus-flat-destrided-but-last"],
}


def lattice(maps: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Lattice factors and their layout floors at 16 and 32 px of maps ``(B, H, W)``."""
    return {f"{prefix}{kind}{g}": fn(maps, g) for g in (16, 32)
            for kind, fn in (("lattice", lattice_factor), ("floor", layout_floor))}


def measure(ref: str, boxes: str, data: str, n: int, batch: int = 32) -> dict:
    """Per variant: lattice factors, pointing game and energy in the box on ``n`` box slices; lattice factors on the
    first ``n`` validation images of ``data``."""
    model, info = load_model(ref)
    val = to_input(load_train_data(data, info.spec.size).val.pixels[:n], info.spec)
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
        val_maps = torch.cat([lrp_map(model, x, None, epsilon_plus_flat(destriding)) for x in val.split(batch)])
        out[name] = {**lattice(torch.cat(maps)), **lattice(val_maps, "val_"), "relevance_kept": float(kept.mean()),
                     **{k: s[k] for k in ("pointing_game", "energy_in_box", "energy_on_background",
                                          "uniform_energy_on_background")}}
    return {"model": ref, "arch": info.arch, "n": len(items), "n_val": len(val), "variants": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="teacher,student")
    p.add_argument("--boxes", default="../shared/data/figshare-boxes-dev", help="box folder (class folders)")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train", help="class folders (validation split)")
    p.add_argument("--n", type=int, default=150, help="box slices (classes in turn) and validation images")
    p.add_argument("--out", default=str(RESULTS / "lrp_lattice_sources"))
    a = p.parse_args(argv)
    res = {"command": command("bench.lrp_lattice_sources", argv),
           "models": [measure(ref, a.boxes, a.data, a.n) for ref in a.models.split(",")]}

    def ci(s: dict) -> str:
        return f"{s['mean']:.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"

    def lat(v: dict, prefix: str = "") -> str:
        return " / ".join(f"{v[f'{prefix}lattice{g}']:.2f} ({v[f'{prefix}floor{g}']:.2f})" for g in (16, 32))

    rows = [[m["model"], m["arch"], m["n"], name, lat(v), lat(v, "val_"),
             ci(v["pointing_game"]), ci(v["energy_in_box"]), ci(v["energy_on_background"]),
             f"{v['uniform_energy_on_background']['mean']:.3f}", f"{v['relevance_kept']:.3f}"]
            for m in res["models"] for name, v in m["variants"].items()]
    body = md_table(["model", "arch", "slices", "strided layers destrided", "lattice 16 / 32 px (floor)",
                     "on validation images (floor)",
                     "pointing game [95% CI]", "energy in box [95% CI]", "energy on the background [95% CI]",
                     "background's share of the input", "share of the logit the map keeps"], rows)
    write(a.out, res, "Sources of the LRP stride lattice: one kind of strided layer destrided at a time", body,
          " (LRP of the predicted class, epsilon-plus-flat rules otherwise; lattice factor 1 = no lattice, in brackets"
          " its layout floor, the factor at the odd periods 1 px either side)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
