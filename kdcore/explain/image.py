"""One uploaded image explained end to end: decode as in training, predict, explain, render, with the mapping
between the model's input and the upload (the public entry point for the CLI, the app and scripts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import ImageDecodeError, ImageSource, InputSpec, open_image, square_resize, to_grey_array
from kdcore.errors import KDCoreError
from kdcore.explain._common import evaluating
from kdcore.explain.frame import Frame
from kdcore.explain.methods import explain, get_method
from kdcore.explain.render import render_overlay


@dataclass
class ImageExplanation:
    """A map of one upload, everything needed to read it, and the coordinates linking it to the upload."""

    x: torch.Tensor  #: float ``(1, C, S, S)``: the preprocessed input the model saw
    heatmap: np.ndarray  #: float32 ``(S, S)`` on the model's square input
    target: int  #: the class explained
    probs: np.ndarray  #: float32 ``(K,)`` softmax of the prediction
    method: str  #: the method's name in :data:`kdcore.explain.METHODS`
    settings: dict[str, str]  #: the method's settings, defaults filled in
    frame: Frame  #: input <-> upload coordinates (:meth:`Frame.to_input`, :meth:`Frame.to_upload`)
    image: Image.Image = field(repr=False)  #: the decoded upload
    overlay: np.ndarray = field(repr=False)  #: uint8 ``(H, W, 3)`` at the upload's size, colour bar included

    @property
    def caption(self) -> str:
        """The method, its settings and the map's native resolution, in one line."""
        return get_method(self.method).caption(self.settings)


def explain_image(model: nn.Module, spec: InputSpec, image: ImageSource, method: str = "lrp",
                  target: str | int | None = "predicted", label: int | None = None,
                  **settings: str) -> ImageExplanation:
    """Explain ``model``'s prediction on one image file, bytes or PIL image.

    ``target``: ``"predicted"`` (or None) for the predicted class, ``"true"`` for ``label``, or a class index.
    ``settings`` override the method's defaults (e.g. ``layer="previous"`` for Grad-CAM). Bad images and targets
    raise :class:`KDCoreError` with one line.
    """
    entry = get_method(method)
    chosen_settings = entry.resolve(settings)
    try:
        img = open_image(image)
        grey = to_grey_array(img)
    except ImageDecodeError as e:
        raise KDCoreError(str(e)) from None
    x = to_input(torch.tensor(square_resize(grey, spec.size))[None], spec)
    with evaluating(model), torch.no_grad():
        probs = model(x).softmax(1)[0]
    if target in (None, "predicted"):
        chosen = int(probs.argmax())
    elif target == "true":
        if label is None:
            raise KDCoreError("target 'true' needs the image's label")
        chosen = label
    elif isinstance(target, int) and not isinstance(target, bool):
        chosen = target
    else:
        raise KDCoreError(f"target must be 'predicted', 'true' or a class index, not {target!r}")
    if not 0 <= chosen < len(probs):
        raise KDCoreError(f"target class {chosen} out of range 0..{len(probs) - 1}")
    heatmap = explain(model, x, chosen, method, **chosen_settings)[0].float().numpy()
    return ImageExplanation(x, heatmap, chosen, probs.numpy(), method, chosen_settings,
                            Frame(*grey.shape, spec.size), img, render_overlay(img, heatmap, method))
