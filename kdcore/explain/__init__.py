"""Explanations of a classifier's prediction: LRP and Grad-CAM heatmaps with one call for every timm CNN.

* :func:`explain_image` -- one image file/bytes/PIL image explained: the input, the map, the class explained and
  the :class:`Frame` mapping input and upload coordinates both ways;
* :func:`explain` -- detached maps ``(B, H, W)`` of a batch, for viewing and for a teacher's targets;
* :func:`localise` -- pointing game and energy in tumour boxes over a folder (:mod:`kdcore.explain.localise`);
* :func:`student_map` -- maps that stay in the autograd graph of the parameters, for a distillation loss, and
  :func:`teacher_map` the map it is compared with (one rule on both sides, :func:`map_rule`, :data:`PAIRED_MAPS`);
* :func:`class_maps` -- one map per class;
* :func:`render_overlay` -- the map over the slice as an RGB image with a colour bar (:func:`map_scale` to share
  one colour scale between maps);
* :data:`METHODS` -- the methods by name (``"lrp"``, ``"gradcam"``), each a :class:`Method` with its title and
  description;
* :func:`evaluating` -- eval mode for a block, every module's own training flag restored after it.
"""

from kdcore.explain._common import Target, evaluating, resize_maps
from kdcore.explain.class_maps import class_maps
from kdcore.explain.frame import Frame
from kdcore.explain.gradcam import grad_cam
from kdcore.explain.image import ImageExplanation, explain_image
from kdcore.explain.lattice import lattice_factor, layout_floor
from kdcore.explain.localise import localise
from kdcore.explain.lrp import COMPOSITES, lrp_map
from kdcore.explain.methods import (
    METHODS,
    PAIRED_MAPS,
    Method,
    explain,
    get_method,
    map_rule,
    student_map,
    teacher_map,
)
from kdcore.explain.render import map_scale, render_overlay

__all__ = ["COMPOSITES", "METHODS", "PAIRED_MAPS", "Frame", "ImageExplanation", "Method", "Target", "class_maps",
           "evaluating", "explain", "explain_image", "get_method", "grad_cam", "lattice_factor", "layout_floor",
           "localise", "lrp_map", "map_rule", "map_scale", "render_overlay", "resize_maps", "student_map",
           "teacher_map"]
