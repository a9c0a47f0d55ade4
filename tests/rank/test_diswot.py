"""DisWOT: the two terms, the score, state hygiene and the stratified batches."""

from __future__ import annotations

import pytest
import torch

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.explain.class_maps import class_similarity, relation_matrix
from kdcore.rank.candidates import build_candidate
from kdcore.rank.diswot import SCORES, compare, matrix_distance, model_terms, stratified_batches

SPEC = InputSpec(size=64)


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(8, 1, 64, 64, generator=gen) for _ in range(2)]


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return build_candidate("test_resnet", 4, SPEC, seed=123)


def test_relation_term_zero_for_same_features_and_width_independent():
    f = torch.randn(6, 16, 4, 4)
    wide = torch.cat([f, f, f], 1)  # 3x the channels, same sample geometry
    assert relation_matrix(f).shape == relation_matrix(wide).shape == (6, 6)
    assert matrix_distance(relation_matrix(f), relation_matrix(f)) == 0
    assert matrix_distance(relation_matrix(f), relation_matrix(wide)) == pytest.approx(0, abs=1e-12)
    assert matrix_distance(relation_matrix(f), relation_matrix(torch.randn(6, 40, 2, 2))) > 0
    assert relation_matrix(f * 1e30).isfinite().all()


def test_semantic_term_zero_for_same_maps_and_rows_normalised():
    maps = torch.rand(4, 256)
    s = class_similarity(maps)
    assert s.shape == (4, 4) and torch.allclose(s.diagonal(), torch.ones(4, dtype=s.dtype))
    assert matrix_distance(s, class_similarity(maps)) == 0
    assert matrix_distance(s, class_similarity(maps * 7.0)) == pytest.approx(0, abs=1e-12)
    assert matrix_distance(s, class_similarity(torch.rand(4, 256)), "cosine") > 0


def test_distances():
    a, b = torch.rand(5, 5, dtype=torch.float64), torch.rand(5, 5, dtype=torch.float64)
    assert matrix_distance(a, b, "l2") == pytest.approx(float(((a - b) ** 2).sum() / 25))
    assert matrix_distance(a, 3 * a, "cosine") == pytest.approx(0, abs=1e-12)
    assert matrix_distance(a, -a, "cosine") == pytest.approx(2)
    with pytest.raises(KDCoreError):
        matrix_distance(a, b, "l1")


def test_score_is_zero_for_the_teacher_itself_and_negative_otherwise(teacher, batches):
    ref = model_terms(teacher, batches)
    same = compare(ref, model_terms(teacher, batches))
    assert same["score"] == 0 and same["m_s"] == 0 and same["m_r"] == 0
    other = compare(ref, model_terms(build_candidate("test_efficientnet", 4, SPEC), batches))
    assert other["score"] < 0 and other["score"] == pytest.approx(-(other["m_s"] + other["m_r"]))
    assert len(other["scores"]) == 2 and other["score_std"] > 0
    cos = compare(ref, model_terms(build_candidate("test_efficientnet", 4, SPEC), batches), "cosine")
    assert cos["score"] < 0 and cos["score"] != other["score"]


def test_thesis_variant_scores_with_lrp_maps_and_cosine(teacher, batches):
    ref = model_terms(teacher, batches, SCORES["thesis"])
    out = compare(ref, model_terms(build_candidate("test_efficientnet", 4, SPEC), batches, SCORES["thesis"]), "cosine")
    assert -4 <= out["score"] < 0 and out["score"] == pytest.approx(-(out["m_s"] + out["m_r"]))


def test_model_state_is_restored(teacher, batches):
    model = build_candidate("test_resnet", 4, SPEC)
    model.train()
    model.layer1.eval()  # a mixed state must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    p = next(model.parameters())
    p.grad = torch.ones_like(p)
    model_terms(model, batches)
    assert flags == {name: m.training for name, m in model.named_modules()}
    assert torch.equal(p.grad, torch.ones_like(p))
    assert all(q.grad is None for q in list(model.parameters())[1:])
    assert all(q.grad is None for q in teacher.parameters())


def test_stratified_batches_are_balanced_disjoint_and_seeded():
    labels = torch.arange(4).repeat_interleave(20)
    out = stratified_batches(labels, 16, batches=3, seed=1)
    assert all(torch.bincount(labels[b], minlength=4).tolist() == [4, 4, 4, 4] for b in out)
    assert torch.bincount(labels[out[0][:8]], minlength=4).tolist() == [2, 2, 2, 2]  # interleaved: prefixes too
    assert len(torch.cat(out).unique()) == 48
    assert all(torch.equal(a, b) for a, b in zip(out, stratified_batches(labels, 16, batches=3, seed=1)))
    with pytest.raises(KDCoreError):
        stratified_batches(labels, 16, batches=6)
