"""Fast CPU inference: a model exported to ONNX and run by ONNX Runtime.

At batch 1 on a CPU a small student spends most of its PyTorch time in per-operator overhead, not arithmetic;
ONNX Runtime fuses the graph (convolution + batch norm + activation) and runs it with far less overhead. The app's
predictions use it (:func:`kdcore.service.predict`); explanations still run the PyTorch model, which has the
gradients. :func:`onnx_runner` exports a model once per weights (``$KDCORE_CACHE/onnx/<digest>.onnx``) and
returns an :class:`OnnxRunner`; its logits match PyTorch's to ~1e-6 (tests/test_runtime.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcore.data.imageio import InputSpec
from kdcore.models.factory import hash_weights
from kdcore.paths import cache_dir

OPSET = 17


class OnnxRunner:
    """``runner(x (B, C, S, S) float32) -> logits (B, K)`` through an ONNX Runtime CPU session."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": x})[0])


def export_onnx(model: nn.Module, spec: InputSpec, path: str | os.PathLike) -> Path:
    """Write ``model`` (eval mode, CPU) as an ONNX graph taking ``x`` ``(B, C, S, S)``, giving ``logits`` ``(B, K)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was = model.training
    model.eval()
    x = torch.zeros(1, spec.channels, spec.size, spec.size)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation; it is the one that
        warnings.simplefilter("ignore")  # needs no extra packages and handles every timm CNN we ship
        torch.onnx.export(model, (x,), buf, input_names=["x"], output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    model.train(was)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def weights_digest(model: nn.Module, spec: InputSpec) -> str:
    """A digest of a model's weights, class and input convention: the name of its exported graph."""
    h = hashlib.sha1(f"{OPSET}|{type(model).__name__}|{spec}".encode())
    hash_weights(h, model)
    return h.hexdigest()[:16]


_export_lock = threading.Lock()


def onnx_runner(model: nn.Module, spec: InputSpec, threads: int | None = None) -> OnnxRunner:
    """An :class:`OnnxRunner` for ``model``, exporting it first unless its graph is cached already."""
    path = cache_dir() / "onnx" / f"{weights_digest(model, spec)}.onnx"
    with _export_lock:
        if not path.is_file():
            export_onnx(model, spec, path)
    return OnnxRunner(path, threads)
