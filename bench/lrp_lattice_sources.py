"""Which strided layers draw the LRP stride lattice: the default composite with one kind of strided layer destrided
at a time, its lattice factor and where its maps point.

    python -m bench.lrp_lattice_sources --models teacher,student --n 150

The default composite (``epsilon-plus-flat``) reads a strided layer unevenly, and the lattice factor
(:mod:`kdcore.explain.lattice`) measures the pile-up at 16 and 32 px. Each variant below reads only the named kind of
strided convolution as stride 1 then subsampling (:func:`kdcore.explain.lrp.destrided_relevance`) and leaves every
other rule as it is, so the variant whose lattice falls names the source: ``shortcuts`` (1x1 strided convolutions,
ResNet-18's downsampling shortcuts), ``block convolutions`` (strided 3x3 and larger convolutions after the stem),
``stem`` (the first convolution's flat rule), ``all`` (the registered ``epsilon-plus-flat-destrided``). Per model and
variant, on the first ``--n`` slices of the box folder (classes in turn), the maps of the predicted class: lattice
factors, pointing game, energy in the box and on the black background with 95% bootstrap intervals
(:mod:`kdcore.explain.localise`). Writes ``bench/results/lrp_lattice_sources.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from zennit.composites import EpsilonPlusFlat
from zennit.core import Composite
from zennit.rules import Flat
from zennit.types import Convolution, Linear

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import to_input
from kdcore.explain import lattice_factor, lrp_map
from kdcore.explain.canonizers import timm_canonizers
from kdcore.explain.localise import boxed_batch, find_boxed_images, image_scores, summarise
from kdcore.explain.lrp import (
    DestridedFlat,
    DestridedZPlus,
    NonNegativeZPlus,
    epsilon_plus_flat,
    epsilon_plus_flat_destrided,
)
from kdcore.models import load_model


class SelectiveDestridedZPlus(DestridedZPlus):
    """z+ that destrides only the strided convolutions ``chosen`` picks; the others keep plain z+."""

    def __init__(self, chosen: Callable[[nn.Conv2d], bool]) -> None:
        super().__init__()
        self.chosen = chosen

    def backward(self, module, grad_input, grad_output):
        if self.chosen(module):
            return super().backward(module, grad_input, grad_output)
        return NonNegativeZPlus.backward(self, module, grad_input, grad_output)

    def copy(self) -> SelectiveDestridedZPlus:
        return type(self)(self.chosen)


def _one_by_one(module: nn.Conv2d) -> bool:
    return tuple(module.kernel_size) == (1, 1)


def variants() -> dict[str, Callable[[], Composite]]:
    """Name -> composite factory: the default, each kind of strided layer destrided alone, and all of them."""
    canon = timm_canonizers

    def blocks(chosen: Callable[[nn.Conv2d], bool], stem: bool = False) -> Composite:
        return EpsilonPlusFlat(layer_map=[(Convolution, SelectiveDestridedZPlus(chosen))],
                               first_map=[(Linear, DestridedFlat() if stem else Flat())], canonizers=canon())

    return {"none (the default)": epsilon_plus_flat,
            "shortcuts (1x1)": lambda: blocks(_one_by_one),
            "block convolutions (3x3 and larger)": lambda: blocks(lambda m: not _one_by_one(m)),
            "stem": lambda: blocks(lambda m: False, stem=True),
            "all (epsilon-plus-flat-destrided)": epsilon_plus_flat_destrided}


def measure(ref: str, boxes: str, n: int, batch: int = 32) -> dict:
    """Per variant: lattice factors, pointing game and energy in the box on ``n`` box slices."""
    model, info = load_model(ref)
    items = find_boxed_images(boxes, [str(c) for c in info.class_names], n)
    batches = []
    for start in range(0, len(items), batch):
        _, pixels, masks, tols = boxed_batch(items[start : start + batch], info.spec.size)
        x = to_input(torch.tensor(np.stack(pixels)), info.spec)
        with torch.no_grad():
            batches.append((x, model.eval()(x).argmax(1), masks, tols, pixels))
    out = {}
    for name, make in variants().items():
        maps = [lrp_map(model, x, targets, make()) for x, targets, *_ in batches]
        records = [image_scores(m.numpy(), mask, tol, px) for (*_, masks, tols, pixels), ms in zip(batches, maps)
                   for m, mask, tol, px in zip(ms, masks, tols, pixels)]
        s = summarise(records)
        every = torch.cat(maps)
        out[name] = {"lattice16": lattice_factor(every, 16), "lattice32": lattice_factor(every, 32),
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
             f"{v['uniform_energy_on_background']['mean']:.3f}"]
            for m in res["models"] for name, v in m["variants"].items()]
    body = md_table(["model", "arch", "slices", "strided layers destrided", "lattice 16 px", "lattice 32 px",
                     "pointing game [95% CI]", "energy in box [95% CI]", "energy on the background [95% CI]",
                     "background's share of the input"], rows)
    write(a.out, res, "Sources of the LRP stride lattice: one kind of strided layer destrided at a time", body,
          " (LRP of the predicted class, epsilon-plus-flat rules otherwise; 1 = no lattice)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
