"""Models: the factory (:func:`create_model`), the model folder (save/load), cards, Hub I/O, ONNX runtime, profiling.

``from kdcore.models import create_model, load_model, save_model`` is the public surface; Hub, runtime and
profiling stay in their own modules (``kdcore.models.hub``, ``.runtime``, ``.profile``) and load on demand.
"""

from kdcore.models.factory import VARIANTS, count_params, create_model, hash_weights
from kdcore.models.folder import WEIGHTS, ModelInfo, load_folder, read_config, save_model
from kdcore.models.refs import load_init, load_model, resolve_model_path

__all__ = ["VARIANTS", "WEIGHTS", "ModelInfo", "count_params", "create_model", "hash_weights", "load_folder",
           "load_init", "load_model", "read_config", "resolve_model_path", "save_model"]
