"""Explanations of a classifier's prediction: LRP and Grad-CAM heatmaps with one call for every timm CNN.

* :func:`explain` -- detached maps for viewing and for a teacher's targets;
* :func:`student_map` -- maps that stay in the autograd graph of the parameters, for a distillation loss;
* :func:`class_maps` -- one map per class;
* :func:`render_overlay` -- the map over the slice as an RGB image with a colour bar (:func:`map_scale` to share
  one colour scale between maps);
* :data:`METHODS` -- the methods by name (``"lrp"``, ``"gradcam"``), each a :class:`Method` with its title and
  description;
* :func:`evaluating` -- eval mode for a block, every module's own training flag restored after it.
"""

from kdcore.explain._common import Target, evaluating
from kdcore.explain.class_maps import class_maps
from kdcore.explain.gradcam import grad_cam
from kdcore.explain.lrp import lrp_map
from kdcore.explain.methods import METHODS, Method, explain, get_method, student_map
from kdcore.explain.render import map_scale, render_overlay

__all__ = ["METHODS", "Method", "Target", "class_maps", "evaluating", "explain", "get_method", "grad_cam", "lrp_map",
           "map_scale", "render_overlay", "student_map"]
