"""Temperature scaling (Guo et al., 2017): one scalar ``T`` per model, fitted on validation logits by NLL.

Dividing the logits by ``T > 0`` never changes the argmax, so accuracy is unchanged; only the confidence moves.
The fitted ``T`` sits in the model folder's ``config.json`` under ``"kdcore": {"calibration": {...}}`` and reaches
:attr:`ModelInfo.calibration`; :func:`calibrated_probs` is how every caller turns logits into probabilities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from kdcore.models.folder import ModelInfo

#: Search range of ``log T``: T in [0.05, 20].
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


def temperature(info: ModelInfo) -> float:
    """The model's fitted temperature, 1.0 when it has none."""
    return float(info.calibration.get("temperature", 1.0))


def calibrated_probs(logits: torch.Tensor, info: ModelInfo) -> torch.Tensor:
    """Probabilities ``(N, K)`` of logits ``(N, K)`` divided by the model's temperature."""
    return (logits.float() / temperature(info)).softmax(-1)


def nll(logits: torch.Tensor, labels: torch.Tensor, t: float = 1.0) -> float:
    """Mean negative log-likelihood of labels ``(N,)`` under ``softmax(logits / t)``, logits ``(N, K)``."""
    return float(F.cross_entropy(logits.double() / t, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The ``T`` minimising :func:`nll` on logits ``(N, K)`` and labels ``(N,)`` (bounded 1-D search on log T)."""
    z, y = logits.double(), labels.long()
    res = minimize_scalar(lambda s: float(F.cross_entropy(z / math.exp(s), y)), bounds=LOG_T_BOUNDS,
                          method="bounded", options={"xatol": 1e-5})
    return float(math.exp(res.x))
