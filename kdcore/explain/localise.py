"""Where the maps point: pointing game and energy inside tumour boxes, with baselines and bootstrap intervals.

The data: class folders of images, each image ``NAME.jpg`` with a sibling ``NAME.txt`` holding one box
``x_center y_center width height`` normalised to the image (YOLO format). Each box is mapped through the model's
pad-to-square and resize (:class:`~kdcore.explain.frame.Frame`); a pixel is inside when its centre is.

Per image (maps ``(S, S)`` on the model's input):

* ``pointing_game``: the map's maximum lies in the box. The maximum is the **first** maximal pixel in row-major
  order (deterministic); ``ties`` counts the pixels sharing the maximal value (1 = a unique peak);
* ``pointing_game_tol15``: the same with the box enlarged by 15% of its width/height on each side;
* ``energy_in_box``: the share of the map's positive part inside the box;
* ``energy_on_background``: the share of the map's positive part on the black background outside the head (grey
  level at most :data:`~kdcore.explain.occlusion.HEAD_LEVEL`); ``uniform_energy_on_background`` is a flat map's (the
  background's share of the input);
* baselines: ``centre_*`` points at the centre of the input; ``uniform_*`` is a flat map (its expected pointing
  game and its energy both equal the box's share of the input);
* ``occlusion_tumour_drop`` / ``occlusion_control_drop``: the target's probability drop when the tumour box / an
  equal-area box elsewhere in the head is black (:mod:`kdcore.explain.occlusion`), and
  ``occlusion_tumour_larger`` (1 when hiding the tumour costs more).

Every summary is a mean with a 95% percentile bootstrap interval (1000 resamples, seed 0), per class and overall.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.dataset import IMAGE_EXTENSIONS
from kdcore.data.imageio import ImageDecodeError, open_image, square_resize, to_grey_array
from kdcore.errors import KDCoreError
from kdcore.explain._common import evaluating
from kdcore.explain.frame import Frame
from kdcore.explain.methods import explain, get_method
from kdcore.explain.occlusion import HEAD_LEVEL, control_mask, occlusion_drops
from kdcore.explain.render import Box, draw_box, render_overlay
from kdcore.models.folder import ModelInfo

TOLERANCE = 0.15
BOOTSTRAP = 1000
METRICS = ("pointing_game", "pointing_game_tol15", "energy_in_box", "energy_on_background", "centre_pointing_game",
           "centre_pointing_game_tol15", "uniform_pointing_game", "uniform_pointing_game_tol15",
           "uniform_energy_on_background", "ties",
           "occlusion_tumour_drop", "occlusion_control_drop", "occlusion_tumour_larger")


@dataclass(frozen=True)
class BoxedImage:
    """One image of a box folder: its file, its class index and its box ``(x_center, y_center, w, h)``
    normalised to the image."""

    path: Path
    label: int
    box: Box


def parse_box(text: str, source: str = "box") -> Box:
    """``"x_center y_center width height"`` (normalised to the image, the first line of a box file) -> a
    :data:`~kdcore.explain.render.Box`; a :class:`KDCoreError` naming ``source`` for anything else."""
    try:
        xc, yc, w, h = (float(v) for v in text.split()[:4])
    except ValueError:
        raise KDCoreError(f"{source}: not a box (one line 'x_center y_center width height', normalised)") from None
    if not (0 <= xc <= 1 and 0 <= yc <= 1 and 0 < w <= 1 and 0 < h <= 1):
        raise KDCoreError(f"{source}: a box's values are fractions of the image (centre 0-1, size above 0 up to 1)")
    return xc, yc, w, h


def read_box(path: Path) -> Box:
    """The box of a box file (:func:`parse_box` of its text)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        raise KDCoreError(f"{path}: not a box file (one line 'x_center y_center width height')") from None
    return parse_box(text, str(path))


def sibling_box(image: object) -> Box | None:
    """The box in the file beside an image path (``NAME.txt`` for ``NAME.jpg``), or None (no such file, not a
    path, or a text that is not a box)."""
    if not isinstance(image, (str, os.PathLike)) or not (path := Path(image).with_suffix(".txt")).is_file():
        return None
    try:
        return read_box(path)
    except KDCoreError:
        return None


def find_boxed_images(folder: str | Path, class_names: list[str], max_images: int | None = None) -> list[BoxedImage]:
    """Images with a sibling box file in the class folders of ``folder`` whose names are model classes; with
    ``max_images``, the first that many taking the classes in turn (each class's files sorted by name)."""
    root = Path(folder)
    if not root.is_dir():
        raise KDCoreError(f"{root}: no such folder")
    per_class = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name not in class_names:
            raise KDCoreError(f"{sub}: folder {sub.name!r} is not a class of the model ({', '.join(class_names)})")
        files = sorted(p for p in sub.iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.with_suffix(".txt").is_file())
        per_class.append([BoxedImage(p, class_names.index(sub.name), read_box(p.with_suffix(".txt"))) for p in files])
    ordered = [item for group in zip(*per_class) for item in group] if per_class else []
    ordered += [item for group in per_class for item in group[min(map(len, per_class)):]]
    if not ordered:
        raise KDCoreError(f"{root}: no class folder holds an image with a sibling .txt box file")
    return ordered[:max_images] if max_images else ordered


def box_mask(box: np.ndarray, size: int) -> np.ndarray:
    """bool ``(size, size)``: pixels whose centre lies in ``box`` ``(x0, y0, x1, y1)`` (input coordinates)."""
    centres = np.arange(size) + 0.5
    inside_x = (centres >= box[0]) & (centres <= box[2])
    inside_y = (centres >= box[1]) & (centres <= box[3])
    return inside_y[:, None] & inside_x[None, :]


def upload_box(item: BoxedImage, height: int, width: int, grow: float = 0.0) -> np.ndarray:
    """The item's box ``(x0, y0, x1, y1)`` in upload pixels, each side moved out by ``grow`` x its size."""
    xc, yc, w, h = item.box
    half_w, half_h = w * (0.5 + grow), h * (0.5 + grow)
    return np.array([(xc - half_w) * width, (yc - half_h) * height, (xc + half_w) * width, (yc + half_h) * height])


def input_mask(item: BoxedImage, height: int, width: int, size: int, grow: float = 0.0) -> np.ndarray:
    """bool ``(size, size)``: the item's box (each side moved out by ``grow`` x its size) on the model's input of
    an upload of ``height`` x ``width`` pixels."""
    return box_mask(Frame(height, width, size).box_to_input(upload_box(item, height, width, grow)), size)


def peak(heatmap: np.ndarray) -> tuple[int, int, int]:
    """``(row, col, ties)``: the first maximal pixel in row-major order and how many pixels share the maximum."""
    flat = heatmap.ravel()
    top = flat.max()
    i = int(np.argmax(flat))  # numpy's argmax returns the first occurrence
    return i // heatmap.shape[1], i % heatmap.shape[1], int((flat == top).sum())


def image_scores(heatmap: np.ndarray, mask: np.ndarray, mask_tol: np.ndarray, pixels: np.ndarray) -> dict[str, float]:
    """The map-dependent and baseline scores of one map ``(S, S)`` for its box masks (bool ``(S, S)``) and its
    uint8 input pixels ``(S, S)``."""
    s = heatmap.shape[0]
    row, col, ties = peak(heatmap)
    positive = np.clip(heatmap, 0, None)
    total = float(positive.sum())
    background = pixels <= HEAD_LEVEL
    centre = s // 2  # the pixel holding the input's centre point (S/2, S/2) for even S
    return {"pointing_game": float(mask[row, col]), "pointing_game_tol15": float(mask_tol[row, col]),
            "energy_in_box": float(positive[mask].sum()) / total if total > 0 else 0.0,
            "energy_on_background": float(positive[background].sum()) / total if total > 0 else 0.0,
            "uniform_energy_on_background": float(background.mean()),
            "centre_pointing_game": float(mask[centre, centre]),
            "centre_pointing_game_tol15": float(mask_tol[centre, centre]),
            "uniform_pointing_game": float(mask.mean()), "uniform_pointing_game_tol15": float(mask_tol.mean()),
            "ties": float(ties)}


def bootstrap(values: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Mean of ``values`` ``(N,)`` and its 95% percentile bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    means = values[np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))].mean(1)
    return {"mean": float(values.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]}


def summarise(records: list[dict]) -> dict:
    """``n`` and every metric's bootstrap summary over ``records`` (images without a control box are left out
    of the occlusion metrics)."""
    out: dict = {"n": len(records)}
    for metric in METRICS:
        values = [r[metric] for r in records if metric in r]
        if values:
            out[metric] = bootstrap(np.array(values))
    out["images_with_ties"] = int(sum(r["ties"] > 1 for r in records))
    return out


def boxed_batch(items: list[BoxedImage], size: int) -> tuple[list, list[np.ndarray], list[np.ndarray],
                                                             list[np.ndarray]]:
    """Per image: the opened upload, its uint8 ``(S, S)`` input pixels, and its box and +15% box as boolean input
    masks ``(S, S)`` (``S = size``); an unreadable image is a :class:`KDCoreError`."""
    images, pixels, masks, tols = [], [], [], []
    for item in items:
        try:
            img = open_image(item.path)
            grey = to_grey_array(img)
        except ImageDecodeError as e:
            raise KDCoreError(str(e)) from None
        images.append(img)
        pixels.append(square_resize(grey, size))
        masks.append(input_mask(item, *grey.shape, size))
        tols.append(input_mask(item, *grey.shape, size, TOLERANCE))
    return images, pixels, masks, tols


def localise(model: nn.Module, info: ModelInfo, folder: str | Path, method: str = "lrp", target: str = "predicted",
             settings: dict | None = None, max_images: int | None = None, out_dir: str | Path | None = None,
             batch: int = 32) -> dict:
    """Localisation scores of ``method`` on ``model`` over a box folder (see the module doc): per-class and overall
    summaries, the settings used, and the images' predictions' accuracy.

    ``target``: ``"predicted"`` explains the predicted class, ``"true"`` the folder's class. ``out_dir``: one
    overlay PNG per image with its box in green.
    """
    if target not in ("predicted", "true"):
        raise KDCoreError(f"target must be 'predicted' or 'true', not {target!r}")
    names = [str(c) for c in info.class_names]
    items = find_boxed_images(folder, names, max_images)
    size, settings = info.spec.size, get_method(method).resolve(settings)
    black = (0.0 - info.spec.mean) / info.spec.std
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        images, pixels, masks, tols = boxed_batch(chunk, size)
        x = to_input(torch.tensor(np.stack(pixels)), info.spec)
        labels = torch.tensor([item.label for item in chunk])
        controls = [control_mask(p, m) for p, m in zip(pixels, masks)]
        has = [i for i, c in enumerate(controls) if c is not None]
        with evaluating(model):
            with torch.no_grad():
                predicted = model(x).argmax(1)
            targets = predicted if target == "predicted" else labels
            maps = explain(model, x, targets, method, **settings).float().numpy()
            drops = occlusion_drops(model, x[has], targets[has], torch.tensor(np.stack([masks[i] for i in has])),
                                    torch.tensor(np.stack([controls[i] for i in has])), black) if has else None
        for i, item in enumerate(chunk):
            rec = {"file": f"{item.path.parent.name}/{item.path.name}", "label": item.label,
                   "predicted": int(predicted[i]), **image_scores(maps[i], masks[i], tols[i], pixels[i])}
            if i in has:
                k = has.index(i)
                tumour, control = float(drops[0][k]), float(drops[1][k])
                rec.update(occlusion_tumour_drop=tumour, occlusion_control_drop=control,
                           occlusion_tumour_larger=float(tumour > control))
            records.append(rec)
            if out_dir is not None:
                Image.fromarray(draw_box(render_overlay(images[i], maps[i], method), item.box)).save(
                    Path(out_dir) / f"{item.path.parent.name}_{item.path.stem}.png")
    per_class = {names[k]: summarise([r for r in records if r["label"] == k])
                 for k in sorted({r["label"] for r in records})}
    return {"model": info.name, "arch": info.arch, "size": size, "method": method, "settings": settings,
            "target": target, "tie_breaking": "first maximum in row-major order", "tolerance": TOLERANCE,
            "bootstrap": {"resamples": BOOTSTRAP, "seed": 0, "interval": "95% percentile"},
            "accuracy": float(np.mean([r["label"] == r["predicted"] for r in records])),
            **summarise(records), "per_class": per_class, "images": records}
