"""Heatmap overlays on the uploaded slice, as RGB images with a colour bar, at the upload's own size.

Each method's colour scale comes from its :class:`~kdcore.explain.methods.Method`. LRP relevance is signed: a
diverging map (blue negative, white zero, red positive) on a symmetric scale ``[-m, m]``; LRP relevance is
heavy-tailed (a few pixels hold much of it), so ``m`` is the 99.5th percentile of the magnitude and larger values
saturate. Grad-CAM is non-negative and smooth: a sequential map (``inferno``) on ``[0, m]``, ``m`` its maximum.
The colour's opacity grows with the magnitude, so near-zero regions show the slice. The bar sits inside the right
edge, labelled with its end values in type large enough to read on a phone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from kdcore.data.imageio import ImageSource, open_image, to_grey_array
from kdcore.explain.frame import Frame
from kdcore.explain.methods import get_method

MAX_ALPHA = 0.7
#: A tumour box ``(x_center, y_center, width, height)``, normalised to the image (the YOLO convention).
Box = tuple[float, float, float, float]
BOX_COLOUR = (0, 255, 0)


def upload_frame(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Undo :func:`kdcore.data.imageio.square_resize`: a ``(S, S)`` map -> ``(height, width)`` over the original
    (resized to the padded square of :class:`~kdcore.explain.frame.Frame`, the padding cropped)."""
    frame = Frame(height, width, heatmap.shape[-1])
    square = F.interpolate(torch.as_tensor(heatmap, dtype=torch.float32)[None, None], size=(frame.side, frame.side),
                           mode="bilinear", align_corners=False)[0, 0].numpy()
    left, top = frame.offset.astype(int)
    return square[top : top + height, left : left + width]


def _colour_bar(canvas: Image.Image, cmap_name: str, low: float, high: float) -> None:
    """The colour scale inside the right edge: a ramp (``high`` on top) with its end values in type 1/11 of the
    image's width (11 px and more wherever the overlay is shown 125 px wide or wider), dark-outlined."""
    w, h = canvas.size
    font = ImageFont.load_default(size=max(10, round(w / 11)))
    text_h = font.size + 2
    bar_w, bar_h = max(6, w // 28), max(20, h - 2 * (text_h + max(4, h // 40)))
    x0, y0 = w - bar_w - max(4, w // 50), (h - bar_h) // 2
    ramp = colormaps[cmap_name](np.linspace(1.0, 0.0, bar_h))[:, None, :3].repeat(bar_w, 1)
    canvas.paste(Image.fromarray((ramp * 255).astype(np.uint8)), (x0, y0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x0 - 1, y0 - 1, x0 + bar_w, y0 + bar_h), outline=(255, 255, 255))
    for value, y, anchor in ((high, y0 - 2, "rb"), (low, y0 + bar_h + 2, "rt")):
        draw.text((x0 + bar_w, y), f"{value:.2g}", font=font, anchor=anchor, fill=(255, 255, 255),
                  stroke_width=max(1, font.size // 12), stroke_fill=(0, 0, 0))


def map_scale(heatmaps: list[np.ndarray | torch.Tensor], method: str = "lrp") -> float:
    """The end ``m`` of ``method``'s colour scale over one or more maps, so that several overlays can share it."""
    percentile = get_method(method).scale_percentile
    mag = np.concatenate([np.abs(np.asarray(torch.as_tensor(h).detach().float().cpu())).ravel() for h in heatmaps])
    return float(np.percentile(mag, percentile)) or float(mag.max()) or 1.0


def render_overlay(image: ImageSource, heatmap: np.ndarray | torch.Tensor, method: str = "lrp",
                   scale: float | None = None, opacity: float = MAX_ALPHA) -> np.ndarray:
    """The slice ``image`` (file, bytes or PIL image) with ``heatmap`` ``(S, S)`` over it: uint8 ``(H, W, 3)``.

    ``heatmap`` is a map on the model's square input (as :func:`kdcore.explain.explain` returns it); ``(H, W)`` is
    the upload's own size. ``scale``: the end of the colour scale (e.g. :func:`map_scale` of maps to compare);
    default: this map's own. ``opacity``: the colour's opacity where the map reaches the scale's end.
    """
    entry = get_method(method)
    grey = to_grey_array(open_image(image))
    heat = upload_frame(np.asarray(torch.as_tensor(heatmap).detach().float().cpu()), *grey.shape)
    top = scale or map_scale([heat], method)
    low = -top if entry.signed else 0.0
    unit = np.clip((heat - low) / (top - low), 0.0, 1.0)
    colour = colormaps[entry.colour_map](unit)[..., :3]
    alpha = opacity * np.clip(np.abs(heat) / top, 0.0, 1.0)[..., None]
    rgb = (1 - alpha) * grey[..., None] + alpha * colour
    canvas = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    _colour_bar(canvas, entry.colour_map, low, top)
    return np.asarray(canvas)


def draw_box(overlay: np.ndarray, box: Box) -> np.ndarray:
    """``overlay`` uint8 ``(H, W, 3)`` of a whole slice with ``box`` outlined in green (1 px per 256 px of the
    longer side)."""
    canvas = Image.fromarray(overlay)
    h, w = overlay.shape[:2]
    xc, yc, bw, bh = box
    corners = ((xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h)
    ImageDraw.Draw(canvas).rectangle(corners, outline=BOX_COLOUR, width=max(1, round(max(h, w) / 256)))
    return np.asarray(canvas)
