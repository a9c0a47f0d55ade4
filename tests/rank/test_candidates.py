"""The candidate registry builds as 1-channel, 4-class CNNs of 0.08M-5M parameters; limits filter the table."""

from __future__ import annotations

import pytest
import torch

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models import count_params
from kdcore.rank.candidates import CANDIDATES, build_candidate, candidate_table

SPEC = InputSpec(size=32)


def test_registry_spans_the_search_space():
    assert len(CANDIDATES) >= 24 and len(set(CANDIDATES.values())) >= 8
    sizes = {name: count_params(build_candidate(name, 4, SPEC)) for name in CANDIDATES}
    assert all(75_000 <= n <= 5_000_000 for n in sizes.values()), sizes
    assert min(sizes.values()) < 100_000 and max(sizes.values()) > 4_000_000
    assert list(sizes.values()) == sorted(sizes.values())  # the registry reads in order of size


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_candidate_gives_a_spatial_feature_map(name):
    model = build_candidate(name, 4, SPEC)
    with torch.no_grad():
        feats = model.forward_features(torch.zeros(2, 1, 64, 64))
    assert feats.ndim == 4 and model(torch.zeros(2, 1, 64, 64)).shape == (2, 4)
    assert not model.training


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build_candidate("test_resnet", 4, SPEC, seed=3), build_candidate("test_resnet", 4, SPEC, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_candidate("test_resnet", 4, SPEC, seed=4)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_table_measures_and_filters():
    rows = candidate_table(SPEC, ["test_resnet", "test_efficientnet"], repeats=1)
    assert [r["name"] for r in rows] == ["test_resnet", "test_efficientnet"]
    assert all(r["params"] > 0 and r["flops"] > 0 and r["latency_ms"] > 0 for r in rows)
    small = candidate_table(SPEC, ["test_resnet", "test_efficientnet"], max_params=200_000, repeats=1)
    assert [r["name"] for r in small] == ["test_efficientnet"]
    with pytest.raises(KDCoreError, match="no candidate fits"):
        candidate_table(SPEC, ["test_resnet"], max_latency_ms=1e-6, repeats=1)
