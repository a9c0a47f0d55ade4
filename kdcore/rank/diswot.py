"""DisWOT terms (Dong, Li, Wei, CVPR 2023): how a randomly initialised student matches the teacher, for the proxies.

For one mini-batch ``x`` of ``N`` images and ``K`` classes, teacher ``T`` and a randomly initialised student ``S``:

- relation term: ``F`` = the pre-pooling feature map (``model.forward_features``) flattened to ``(N, CHW)``,
  ``G = rownorm(F Fᵀ)`` ``(N, N)`` (:func:`kdcore.explain.class_maps.relation_matrix`), ``M_r = d(G_T, G_S)``;
- semantic term: one class map per class (:func:`kdcore.explain.class_maps.class_maps`: Grad-CAM at the pre-pooling
  feature map, or LRP at the input), resized to a common ``map_size²`` grid and averaged over the batch, gives ``A``
  ``(K, HW)``; ``S = rownorm(A) rownorm(A)ᵀ`` ``(K, K)``, ``M_s = d(S_T, S_S)``. Both terms compare square
  matrices, so any widths and map sizes mix;
- ``score = -(M_s + M_r)``, higher is better;
- ``d`` is the squared L2 distance divided by the number of entries (``||A - B||²_F / n²``, the paper's) or the
  cosine distance of the flattened matrices (``1 - <A, B>_F / (||A||_F ||B||_F)``, the thesis's).

The teacher's matrices are computed once per ranking (:func:`model_terms`) and compared with each student's
(:func:`compare`). Models are scored in eval mode; their training flags are restored and ``.grad`` is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import KDCoreError
from kdcore.explain import evaluating
from kdcore.explain.class_maps import class_maps, class_similarity, relation_matrix

DISTANCES = ("l2", "cosine")


@dataclass(frozen=True)
class ScoreVariant:
    """A form of the DisWOT score: which class maps feed the semantic term, which matrix distance both terms use."""

    maps: str = "gradcam"  # an explanation method of :data:`kdcore.explain.METHODS`
    distance: str = "l2"
    map_images: int | None = None  # class maps from the first images of each batch only (None: all of them)


#: The score variants by name. ``original``: the paper's form (Grad-CAM, squared L2); ``thesis``: LRP maps and
#: cosine distance. LRP needs a full backward pass per class, so its maps are averaged over 16 images of each
#: (class-interleaved) batch.
SCORES = {"original": ScoreVariant("gradcam", "l2"), "thesis": ScoreVariant("lrp", "cosine", map_images=16)}


@dataclass
class Terms:
    """One model's matrices per batch: ``grams`` ``[(N, N)]`` and ``similarities`` ``[(K, K)]``."""

    grams: list[torch.Tensor]
    similarities: list[torch.Tensor]


def matrix_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l2") -> float:
    """Distance between two ``(n, n)`` matrices: ``||a - b||²_F / n²`` (``l2``) or ``1 - cos(vec a, vec b)``."""
    if distance == "l2":
        return float((a - b).pow(2).sum() / a.shape[0] ** 2)
    if distance == "cosine":
        return float(1 - F.cosine_similarity(a.flatten(), b.flatten(), dim=0, eps=1e-12))
    raise KDCoreError(f"unknown distance {distance!r} (choose from {', '.join(DISTANCES)})")


def model_terms(model: nn.Module, batches: list[torch.Tensor], variant: ScoreVariant = ScoreVariant(),
                map_size: int = 16) -> Terms:
    """The relation and class-similarity matrices of ``model`` on each ``(N, C, H, W)`` batch."""
    grams, sims = [], []
    m, grid = variant.map_images, (map_size, map_size)
    with evaluating(model):
        for x in batches:
            with torch.no_grad():
                feats = model.forward_features(x)
            grams.append(relation_matrix(feats))
            maps = class_maps(model, x[:m], variant.maps, grid, features=feats[:m])  # (n, K, map_size, map_size)
            sims.append(class_similarity(maps.mean(0).flatten(1)))
    return Terms(grams, sims)


def compare(teacher: Terms, student: Terms, distance: str = "l2") -> dict:
    """``{score, m_s, m_r, score_std, scores}``: means over batches, the spread and the per-batch scores."""
    m_r = torch.tensor([matrix_distance(t, s, distance) for t, s in zip(teacher.grams, student.grams)])
    m_s = torch.tensor([matrix_distance(t, s, distance) for t, s in zip(teacher.similarities, student.similarities)])
    scores = -(m_s + m_r)
    return {"score": scores.mean().item(), "m_s": m_s.mean().item(), "m_r": m_r.mean().item(),
            "score_std": scores.std().item() if len(scores) > 1 else 0.0, "scores": scores.tolist()}


def stratified_batches(
    labels: torch.Tensor, batch_size: int = 64, batches: int = 1, seed: int = 0
) -> list[torch.Tensor]:
    """``batches`` disjoint index sets of ``batch_size``, the classes in equal shares and interleaved (seeded).

    Interleaving (class 0, 1, ..., K-1, 0, 1, ...) keeps any prefix of a batch balanced too.
    """
    gen = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
    shares = [batch_size // len(classes) + (i < batch_size % len(classes)) for i in range(len(classes))]
    out = []
    for b in range(batches):
        parts = [idx[b * n : (b + 1) * n] for idx, n in zip(per_class, shares)]
        if sum(len(p) for p in parts) < batch_size:
            raise KDCoreError(f"not enough images for {batches} stratified batches of {batch_size}")
        position = torch.cat([torch.arange(len(p)) * len(parts) + c for c, p in enumerate(parts)])
        out.append(torch.cat(parts)[position.argsort()])
    return out
