"""How well any map on a coarse feature grid can point, once upsampled the way Grad-CAM's maps are.

    python -m bench.gradcam_ceiling --boxes ../shared/data/figshare-boxes-dev

Grad-CAM's map lives on a stage's grid (4x4 for a ResNet's last stage at 128 px, 8x8 for the stage before it,
16x16 for the one before that) and :func:`kdcore.explain.gradcam.upsample_cam` interpolates it to the input; the
maximum of the upsampled map is always at one of the grid cells' centres. So the pointing game of *any* map on that
grid, whatever the model, is bounded by the share of boxes that contain one cell's peak. This bench measures that
bound (an oracle that picks the best cell for every image) over a box folder, per class and overall, with the
pointing game's tie rule and 95% bootstrap intervals (:mod:`kdcore.explain.localise`). Model-free.
Writes ``bench/results/gradcam_ceiling.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.report import RESULTS, command, md_table, write
from kdcore.data.imageio import open_image, to_grey_array
from kdcore.explain.gradcam import upsample_cam
from kdcore.explain.localise import TOLERANCE, bootstrap, find_boxed_images, input_mask, peak

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def cell_peaks(grid: int, size: int) -> list[tuple[int, int]]:
    """The pointing game's pixel ``(row, col)`` for each one-hot map on a ``grid`` x ``grid`` feature grid,
    upsampled to ``size`` x ``size`` as Grad-CAM's maps are."""
    peaks = []
    for cell in range(grid * grid):
        one_hot = torch.zeros(1, grid * grid)
        one_hot[0, cell] = 1.0
        row, col, _ = peak(upsample_cam(one_hot.view(1, grid, grid), (size, size))[0].numpy())
        peaks.append((row, col))
    return peaks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boxes", default="../shared/data/figshare-boxes-dev", help="box folder (class folders)")
    p.add_argument("--size", type=int, default=128, help="the model's input side")
    p.add_argument("--grids", default="4,8,16", help="feature grid sides")
    p.add_argument("--out", default=str(RESULTS / "gradcam_ceiling"))
    a = p.parse_args(argv)
    grids = [int(g) for g in a.grids.split(",")]
    items = find_boxed_images(a.boxes, CLASSES)
    masks = []
    for item in items:
        height, width = to_grey_array(open_image(item.path)).shape
        masks.append((input_mask(item, height, width, a.size), input_mask(item, height, width, a.size, TOLERANCE)))
    res: dict = {"command": command("bench.gradcam_ceiling", argv), "size": a.size, "n": len(items), "grids": {}}
    rows = []
    for grid in grids:
        rr, cc = np.array(cell_peaks(grid, a.size)).T
        hits = np.array([[m[rr, cc].any(), tol[rr, cc].any()] for m, tol in masks], dtype=np.float64)
        labels = np.array([item.label for item in items])
        groups = {"all": np.ones(len(items), bool)} | {CLASSES[k]: labels == k for k in sorted(set(labels))}
        res["grids"][str(grid)] = {name: {"n": int(sel.sum()), "ceiling": bootstrap(hits[sel, 0]),
                                          "ceiling_tol15": bootstrap(hits[sel, 1])} for name, sel in groups.items()}
        for name, d in res["grids"][str(grid)].items():
            lo, hi = d["ceiling"]["ci95"]
            rows.append([f"{grid}x{grid} ({a.size // grid} px cells)", name, d["n"],
                         f"{d['ceiling']['mean']:.3f} [{lo:.2f}, {hi:.2f}]", f"{d['ceiling_tol15']['mean']:.3f}"])
    body = ["The best pointing game any map on each feature grid can reach after Grad-CAM's upsampling (an oracle "
            "chooses the cell for every image); a ResNet at 128 px has a 4x4 last stage, 8x8 before it, 16x16 "
            "before that.", "",
            *md_table(["grid", "class", "n", "pointing-game ceiling [95% CI]", "ceiling, box +15%"], rows)]
    write(a.out, res, f"Pointing-game ceiling of coarse maps ({len(items)} boxed slices, {a.size} px input)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
