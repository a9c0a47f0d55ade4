"""Training-free proxies: one registry of scores that rank untrained candidate students, higher = predicted better.

Every proxy scores a freshly built candidate (timm's random initialisation) on the same :class:`Probe`: one
stratified batch ``x`` ``(N, C, H, W)`` with labels ``y`` ``(N,)``, and the teacher where the proxy compares with
it (its terms computed once per ranking). A proxy may change the model it is given (mode, gradients, weights), so
:func:`rank` builds each candidate anew for it. The registry:

- ``diswot``: DisWOT as published (Dong et al., CVPR 2023), ``-(M_s + M_r)`` with Grad-CAM maps, squared L2;
  ``diswot_thesis``: LRP maps, cosine distance; ``m_s`` and ``m_r``: ``-M_s`` and ``-M_r`` alone (Grad-CAM, L2);
  see :mod:`kdcore.rank.diswot`;
- ``synflow`` (Tanaka et al. 2020): ``sum |θ ⊙ ∂R/∂θ|`` with ``R`` the sum of the outputs of the model with
  ``|θ|`` in float64 on an all-ones ``(1, C, S, S)`` input, in eval mode (BN at initialisation is near identity);
  data-independent;
- ``naswot`` (Mellor et al. 2021): ``log |det K|`` of the binary-code kernel ``K_ij = Σ_layers (D - hamming(c_i,
  c_j))``, ``c`` the signs of every activation layer's output over the batch (train mode);
- ``gradnorm`` and ``snip`` (Abdelfattah et al. 2021): ``Σ ||∂L/∂W||₂`` and ``Σ |W ⊙ ∂L/∂W|`` over the weights
  of every convolution and linear layer, ``L`` the cross-entropy on the batch (train mode);
- ``zico`` (Li et al., ICLR 2023): ``Σ_layers log Σ_w mean|g_w| / std(g_w)`` over the batch's two halves;
- ``params``, ``flops``, ``latency``: the candidate's size and cost (capacity: more predicts better), as
  :func:`kdcore.rank.candidates.candidate_cost` measures them (cached per candidate);
- ``random``: a uniform draw seeded by the probe's seed and the candidate's name (the null).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import load_train_data
from kdcore.errors import KDCoreError
from kdcore.models import count_params
from kdcore.rank.candidates import build_candidate, candidate_cost, candidate_table
from kdcore.rank.diswot import SCORES, ScoreVariant, Terms, compare, model_terms, stratified_batches
from kdcore.rank.validation import load_validation, with_accuracy

#: Activation layers whose output signs make NASWOT's binary codes.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Mish)


@dataclass
class Probe:
    """What every proxy sees: one batch ``x`` ``(N, C, H, W)``, its labels ``y`` ``(N,)``, the input spec, the
    number of classes and the teacher (for the DisWOT family), the seed of the random proxy."""

    x: torch.Tensor
    y: torch.Tensor
    spec: InputSpec
    num_classes: int
    teacher: nn.Module | None = None
    seed: int = 0
    _terms: dict[ScoreVariant, Terms] = field(default_factory=dict, repr=False)

    def teacher_terms(self, variant: ScoreVariant) -> Terms:
        """The teacher's DisWOT matrices on ``x`` under ``variant``, computed on first use."""
        if self.teacher is None:
            raise KDCoreError("this proxy compares with a teacher: give the probe one")
        if variant not in self._terms:
            self._terms[variant] = model_terms(self.teacher, [self.x], variant)
        return self._terms[variant]


@dataclass(frozen=True)
class Proxy:
    """A registered proxy: ``fn(name, model, probe) -> score`` (higher = better) and what it is."""

    name: str
    fn: Callable[[str, nn.Module, Probe], float]
    summary: str
    variant: ScoreVariant | None = None  # the teacher's terms it needs (computed before the candidates are timed)


PROXIES: dict[str, Proxy] = {}


def register(name: str, summary: str, variant: ScoreVariant | None = None):
    """Decorator adding ``fn(name, model, probe) -> float`` to :data:`PROXIES` as ``name``."""
    def add(fn: Callable[[str, nn.Module, Probe], float]) -> Callable[[str, nn.Module, Probe], float]:
        PROXIES[name] = Proxy(name, fn, summary, variant)
        return fn
    return add


def diswot_terms(model: nn.Module, probe: Probe, variant: ScoreVariant) -> dict:
    """``{m_s, m_r, ...}`` of ``model`` against the probe's teacher (:func:`kdcore.rank.diswot.compare`)."""
    return compare(probe.teacher_terms(variant), model_terms(model, [probe.x], variant), variant.distance)


@register("diswot", "DisWOT as published: -(M_s + M_r), Grad-CAM maps, squared L2", SCORES["original"])
def diswot(name: str, model: nn.Module, probe: Probe) -> float:
    return diswot_terms(model, probe, SCORES["original"])["score"]


@register("diswot_thesis", "DisWOT, thesis variant: -(M_s + M_r), LRP maps, cosine distance", SCORES["thesis"])
def diswot_thesis(name: str, model: nn.Module, probe: Probe) -> float:
    return diswot_terms(model, probe, SCORES["thesis"])["score"]


@register("m_s", "-M_s alone: class-similarity mismatch with the teacher (Grad-CAM, L2)", SCORES["original"])
def m_s(name: str, model: nn.Module, probe: Probe) -> float:
    return -diswot_terms(model, probe, SCORES["original"])["m_s"]


@register("m_r", "-M_r alone: sample-relation mismatch with the teacher (L2)", SCORES["original"])
def m_r(name: str, model: nn.Module, probe: Probe) -> float:
    return -diswot_terms(model, probe, SCORES["original"])["m_r"]


@register("synflow", "SynFlow: sum |θ · dR/dθ| of the |θ| model on an all-ones input (data-independent)")
def synflow(name: str, model: nn.Module, probe: Probe) -> float:
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    s = probe.spec
    model(torch.ones(1, s.channels, s.size, s.size, dtype=torch.float64)).sum().backward()
    return float(sum((p.detach() * p.grad).abs().sum() for p in model.parameters() if p.grad is not None))


def binary_code_kernel(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """NASWOT's kernel ``(N, N)``: per activation layer, the number of units where two images' output signs
    agree, summed over layers (``model`` in its current mode)."""
    k = torch.zeros(len(x), len(x), dtype=torch.float64)

    def hook(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        c = (out.detach().flatten(1) > 0).float()
        k.add_((c @ c.T + (1 - c) @ (1 - c).T).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    if not handles:
        raise KDCoreError("NASWOT needs activation layers (ReLU, ReLU6, Hardswish, SiLU, GELU, ...)")
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return k


@register("naswot", "NASWOT: log|det| of the activation binary-code kernel over the batch")
def naswot(name: str, model: nn.Module, probe: Probe) -> float:
    return float(torch.linalg.slogdet(binary_code_kernel(model.train(), probe.x))[1])


def layer_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights of every convolution and linear layer (the layers the gradient proxies sum over)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """``∂L/∂W`` of the cross-entropy on ``(x, y)`` for :func:`layer_weights`, in train mode."""
    weights = layer_weights(model.train())
    return list(torch.autograd.grad(F.cross_entropy(model(x), y), weights, allow_unused=True,
                                    materialize_grads=True))


@register("gradnorm", "GradNorm: sum of the gradient norms of the conv/linear weights (cross-entropy)")
def gradnorm(name: str, model: nn.Module, probe: Probe) -> float:
    return float(sum(g.norm() for g in loss_gradients(model, probe.x, probe.y)))


@register("snip", "SNIP: sum |W · dL/dW| over the conv/linear weights (cross-entropy)")
def snip(name: str, model: nn.Module, probe: Probe) -> float:
    grads = loss_gradients(model, probe.x, probe.y)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(layer_weights(model), grads)))


@register("zico", "ZiCo: sum over layers of log sum mean|g| / std(g), gradients of the batch's two halves")
def zico(name: str, model: nn.Module, probe: Probe) -> float:
    halves = [loss_gradients(model, x, y) for x, y in zip(probe.x.chunk(2), probe.y.chunk(2))]
    total = 0.0
    for grads in zip(*halves):
        g = torch.stack([t.flatten() for t in grads]).double()  # (2, weights)
        std, mean_abs = g.std(0, unbiased=False), g.abs().mean(0)
        ratio = (mean_abs[std > 0] / std[std > 0]).sum()
        if ratio > 0:
            total += float(ratio.log())
    return total


@register("params", "parameter count (more predicts better)")
def params(name: str, model: nn.Module, probe: Probe) -> float:
    return float(count_params(model))


@register("flops", "FLOPs of one image (more predicts better)")
def flops(name: str, model: nn.Module, probe: Probe) -> float:
    return float(candidate_cost(name, probe.num_classes, probe.spec)["flops"])


@register("latency", "batch-1 CPU latency, as the candidate table measures it (more predicts better)")
def latency(name: str, model: nn.Module, probe: Probe) -> float:
    return float(candidate_cost(name, probe.num_classes, probe.spec)["latency_ms"])


@register("random", "a random ranking, seeded (the null)")
def random_draw(name: str, model: nn.Module, probe: Probe) -> float:
    return float(np.random.default_rng([probe.seed, zlib.crc32(name.encode())]).random())


#: The published proxy validation (:mod:`kdcore.rank.validation`, from ``python -m bench.rank_validate --publish``).
PUBLISHED = load_validation()

#: Kendall tau of each validated proxy against distilled accuracy: ``{proxy: {"tau", "low", "high", "p", "n",
#: "seconds"}}``, ``low``/``high`` the 95% bootstrap interval over candidates, ``p`` the permutation p-value,
#: ``seconds`` its median cost per candidate.
VALIDATION: dict[str, dict[str, float]] = PUBLISHED.proxies

#: The default when no validation is shipped: the parameter count, the cheapest proxy.
FALLBACK = "params"

#: A proxy is shown as predictive when its measured tau is at least this with p below :data:`BAR_P`.
BAR_TAU, BAR_P = 0.5, 0.05


def default_proxy(validation: dict[str, dict[str, float]] = VALIDATION) -> str:
    """The proxy with the best measured tau in ``validation`` (a tie goes to the one with fewer ``seconds`` per
    candidate), or :data:`FALLBACK` when nothing has been measured."""
    if not validation:
        return FALLBACK
    return max(validation, key=lambda p: (validation[p]["tau"], -validation[p].get("seconds", float("inf"))))


def validation_note(proxy: str, validation: dict[str, dict[str, float]] = VALIDATION,
                    teacher: str = PUBLISHED.teacher) -> str:
    """What the validation (with students of ``teacher``) showed of ``proxy`` in plain words: its Kendall tau with
    interval, and a warning when it (or, unvalidated, every proxy) is below the bar."""
    bar = f"the bar (Kendall tau >= {BAR_TAU} against distilled accuracy with p < {BAR_P})"
    passing = [p for p, v in validation.items() if v["tau"] >= BAR_TAU and v["p"] < BAR_P]
    caveat = "The ranking is a guide only: distil the top few candidates before choosing."
    if proxy not in validation:
        return ("⚠ This proxy was not validated; " + (f"proxies that pass {bar}: {', '.join(passing)}." if passing
                                                       else f"no proxy has passed {bar} on this task.") + f" {caveat}")
    v = validation[proxy]
    measured = (f"Measured Kendall tau against distilled accuracy: {v['tau']:+.2f} (95% interval {v['low']:+.2f} "
                f"to {v['high']:+.2f}, p = {v['p']:.3f}, {v['n']:.0f} candidates distilled from `{teacher}`).")
    if proxy in passing:
        return measured
    return (f"{measured} ⚠ Below {bar}: this proxy has not shown that it predicts which student distils best"
            + ("" if passing else ", and no proxy has") + f". {caveat}")


def probe_batch(pixels: torch.Tensor, labels: torch.Tensor, spec: InputSpec, num_classes: int,
                teacher: nn.Module | None = None, batch_size: int = 64, seed: int = 0) -> Probe:
    """A :class:`Probe` on one stratified, seeded batch of ``batch_size`` from uint8 ``(N, S, S)`` images."""
    idx = stratified_batches(labels, batch_size, 1, seed)[0]
    return Probe(to_input(pixels[idx], spec), labels[idx], spec, num_classes, teacher, seed)


def get_proxy(name: str) -> Proxy:
    """The registered proxy ``name``; an unknown name is a :class:`KDCoreError` listing the choices."""
    if name not in PROXIES:
        raise KDCoreError(f"unknown proxy {name!r}: choose from {', '.join(PROXIES)}")
    return PROXIES[name]


def score(proxy: str, name: str, probe: Probe, seed: int = 0) -> float:
    """``proxy``'s score of candidate ``name`` built at timm's random initialisation from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_proxy(proxy).fn(name, build_candidate(name, probe.num_classes, probe.spec, seed), probe)


def rank(names: list[str], probe: Probe, proxy: str, inits: int = 1,
         progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """``[{name, score, score_std, seconds}]`` best first: ``score`` the mean of ``proxy`` over ``inits`` random
    initialisations, ``score_std`` their spread, ``seconds`` the wall time per candidate (building included; the
    teacher's terms are computed once, before). ``progress("score", done, total)`` after each candidate."""
    variant = get_proxy(proxy).variant
    if variant is not None:
        probe.teacher_terms(variant)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        scores = torch.tensor([score(proxy, name, probe, seed) for seed in range(inits)], dtype=torch.float64)
        rows.append({"name": name, "score": scores.mean().item(),
                     "score_std": scores.std().item() if inits > 1 else 0.0,
                     "seconds": round(time.perf_counter() - t0, 3)})
        if progress is not None:
            progress("score", len(rows), len(names))
    return sorted(rows, key=lambda r: -r["score"])


def rank_for_teacher(
    teacher: nn.Module,
    spec: InputSpec,
    class_names: list[str],
    data: str,
    names: list[str] | None = None,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
    proxy: str | None = None,
    batch_size: int = 64,
    inits: int = 1,
    seed: int = 0,
    split: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """The whole ranking the CLI and the app run: candidate table (limits applied first), one stratified batch
    from the training side of ``data``'s split, ``proxy``'s scores (:func:`default_proxy` if None). Rows best
    first: ``{name, family, proxy, score, score_std, seconds, params, flops, latency_ms, distilled_accuracy,
    distilled_std, pareto}`` (the last three from :data:`PUBLISHED`, see :func:`kdcore.rank.validation.with_accuracy`).
    ``progress(stage, done, total)`` reports each candidate measured (``"measure"``) and scored (``"score"``).
    """
    proxy = get_proxy(proxy or default_proxy()).name
    train = load_train_data(data, spec.size, split)
    if list(train.class_names) != list(class_names):
        raise KDCoreError(f"{data}: classes {train.class_names} differ from the teacher's {class_names}")
    table = {r["name"]: r for r in candidate_table(spec, names, max_params, max_latency_ms, len(class_names),
                                                      progress=progress)}
    probe = probe_batch(train.train.pixels, train.train.labels, spec, len(class_names), teacher, batch_size, seed)
    rows = rank(list(table), probe, proxy, inits, progress)
    return with_accuracy([table[r["name"]] | r | {"proxy": proxy} for r in rows], PUBLISHED)
