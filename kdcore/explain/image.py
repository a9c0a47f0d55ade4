"""One uploaded image, end to end: decode as in training, predict, explain, render (for the CLI and the app)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import ImageDecodeError, ImageSource, InputSpec, open_image, square_resize, to_grey_array
from kdcore.errors import KDCoreError
from kdcore.explain._common import evaluating
from kdcore.explain.methods import explain
from kdcore.explain.render import render_overlay


@dataclass
class ImageExplanation:
    overlay: np.ndarray  #: uint8 ``(H, W, 3)`` at the upload's size, colour bar included
    heatmap: np.ndarray  #: float32 ``(S, S)`` on the model's square input
    target: int  #: the class explained
    probs: np.ndarray  #: float32 ``(K,)`` softmax of the prediction


def explain_image(model: nn.Module, spec: InputSpec, image: ImageSource, method: str = "lrp",
                  target: int | None = None) -> ImageExplanation:
    """Explain ``model``'s prediction on one image file, bytes or PIL image (``target`` None = predicted class)."""
    try:
        img = open_image(image)
        pixels = square_resize(to_grey_array(img), spec.size)
    except ImageDecodeError as e:
        raise KDCoreError(str(e)) from None
    x = to_input(torch.tensor(pixels)[None], spec)
    with evaluating(model), torch.no_grad():
        probs = model(x).softmax(1)[0]
    if target is not None and not 0 <= target < len(probs):
        raise KDCoreError(f"target class {target} out of range 0..{len(probs) - 1}")
    chosen = int(probs.argmax()) if target is None else target
    heatmap = explain(model, x, chosen, method)[0]
    return ImageExplanation(render_overlay(img, heatmap, method), heatmap.numpy(), chosen, probs.numpy())
