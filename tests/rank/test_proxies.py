"""The proxy registry: every proxy scores a tiny model; hand-checkable properties; the ranking and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore.cli import main
from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models import count_params
from kdcore.rank import proxies
from kdcore.rank.candidates import build_candidate, candidate_cost
from kdcore.rank.proxies import PROXIES, Probe, binary_code_kernel, default_proxy, rank, score

SPEC = InputSpec(size=32)


def probe(seed: int = 0, n: int = 8, teacher: nn.Module | None = None) -> Probe:
    gen = torch.Generator().manual_seed(seed)
    return Probe(torch.randn(n, 1, 32, 32, generator=gen), torch.arange(4).repeat(n // 4), SPEC, 4, teacher, seed)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    return build_candidate("test_resnet", 4, SPEC, seed=123)


class Tiny(nn.Module):
    """A 1-channel conv + ReLU + linear net on 4x4 inputs, small enough to check by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.act, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def tiny_probe(n: int = 8) -> Probe:
    gen = torch.Generator().manual_seed(1)
    return Probe(torch.randn(n, 1, 4, 4, generator=gen), torch.arange(4).repeat(n // 4), InputSpec(size=4), 4)


@pytest.mark.parametrize("name", list(PROXIES))
def test_every_proxy_scores_a_tiny_candidate_deterministically(name, teacher):
    p = probe(teacher=teacher)
    a, b = score(name, "test_efficientnet", p), score(name, "test_efficientnet", p)
    assert math.isfinite(a) and a == b
    assert PROXIES[name].summary


def test_synflow_is_positive_and_data_independent():
    a, b = score("synflow", "test_resnet", probe(0)), score("synflow", "test_resnet", probe(1, n=4))
    assert a > 0 and a == b
    assert score("synflow", "test_resnet", probe(0), seed=1) != a  # but it depends on the weights


def test_naswot_kernel_and_log_determinant_match_a_hand_computation():
    model, p = Tiny(), tiny_probe()
    codes = (model.act(model.conv(p.x)).flatten(1) > 0).int()  # (N, 32), the one ReLU's signs
    hand = torch.tensor([[int((ci == cj).sum()) for cj in codes] for ci in codes], dtype=torch.float64)
    assert torch.equal(binary_code_kernel(model, p.x), hand)
    assert PROXIES["naswot"].fn("tiny", Tiny(), p) == pytest.approx(math.log(abs(float(torch.det(hand)))))
    with pytest.raises(KDCoreError, match="activation"):
        binary_code_kernel(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), p.x)


def test_gradnorm_and_snip_match_gradients_computed_by_hand():
    model, p = Tiny(), tiny_probe()
    F.cross_entropy(model(p.x), p.y).backward()
    weights = [model.conv.weight, model.fc.weight]
    assert PROXIES["gradnorm"].fn("tiny", Tiny(), p) == pytest.approx(sum(float(w.grad.norm()) for w in weights))
    assert PROXIES["snip"].fn("tiny", Tiny(), p) == pytest.approx(
        sum(float((w.detach() * w.grad).abs().sum()) for w in weights))


def test_zico_matches_the_formula_on_the_two_halves():
    p = tiny_probe()
    grads = []
    for x, y in zip(p.x.chunk(2), p.y.chunk(2)):
        model = Tiny()
        F.cross_entropy(model(x), y).backward()
        grads.append([model.conv.weight.grad.flatten().double(), model.fc.weight.grad.flatten().double()])
    hand = 0.0
    for g1, g2 in zip(*grads):
        std, mean = (g1 - g2).abs() / 2, (g1.abs() + g2.abs()) / 2
        hand += math.log(float((mean[std > 0] / std[std > 0]).sum()))
    assert PROXIES["zico"].fn("tiny", Tiny(), p) == pytest.approx(hand)


def test_cost_proxies_are_the_candidate_table_figures():
    p = probe()
    cost = candidate_cost("test_resnet", 4, SPEC)
    assert score("params", "test_resnet", p) == count_params(build_candidate("test_resnet", 4, SPEC))
    assert score("flops", "test_resnet", p) == cost["flops"]
    assert score("latency", "test_resnet", p) == cost["latency_ms"]


def test_random_is_seeded_per_candidate():
    values = {n: score("random", n, probe(0)) for n in ("test_resnet", "test_efficientnet", "resnet10t_w8")}
    assert values == {n: score("random", n, probe(0)) for n in values} and len(set(values.values())) == 3
    assert all(0 <= v < 1 for v in values.values())
    assert score("random", "test_resnet", probe(1)) != values["test_resnet"]


def test_diswot_proxies_are_the_terms(teacher):
    p = probe(teacher=teacher)
    m_s, m_r = score("m_s", "test_efficientnet", p), score("m_r", "test_efficientnet", p)
    assert score("diswot", "test_efficientnet", p) == pytest.approx(m_s + m_r) and m_s < 0 and m_r < 0
    with pytest.raises(KDCoreError, match="teacher"):
        score("diswot", "test_efficientnet", probe())


def test_default_is_the_best_measured_tau_and_a_tie_goes_to_the_cheaper():
    assert default_proxy({}) == proxies.FALLBACK  # nothing validated
    measured = {"diswot": {"tau": 0.2, "seconds": 0.1}, "naswot": {"tau": 0.6, "seconds": 0.5},
                "synflow": {"tau": 0.6, "seconds": 0.1}}
    assert default_proxy(measured) == "synflow"
    assert default_proxy(measured | {"naswot": {"tau": 0.6, "seconds": 0.05}}) == "naswot"
    best = max(proxies.VALIDATION, key=lambda p: proxies.VALIDATION[p]["tau"])  # the published validation
    assert default_proxy() == best and proxies.VALIDATION[best]["n"] >= 24


def test_rank_sorts_times_and_computes_the_teacher_once(teacher, monkeypatch):
    calls = []
    terms = proxies.model_terms
    monkeypatch.setattr(proxies, "model_terms", lambda m, *a: calls.append(m is teacher) or terms(m, *a))
    rows = rank(["test_resnet", "test_efficientnet"], probe(teacher=teacher), "diswot", inits=2)
    assert calls.count(True) == 1 and calls.count(False) == 4
    assert rows[0]["score"] >= rows[1]["score"] and all(r["seconds"] > 0 and r["score_std"] > 0 for r in rows)
    with pytest.raises(KDCoreError, match="unknown proxy 'nope'"):
        rank(["test_resnet"], probe(), "nope")


def test_cli_rank_json_schema_and_filters(tiny_model_dir, tiny_data, tmp_path, capsys):
    out = tmp_path / "rank.json"
    args = ["rank", "--teacher", str(tiny_model_dir), "--data", str(tiny_data), "--batch-size", "8",
            "--split", str(tmp_path / "split.json"), "--candidates", "test_resnet,test_efficientnet"]
    assert main([*args, "--proxy", "naswot", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["name"] for r in rows} == {"test_resnet", "test_efficientnet"}
    assert all({"name", "proxy", "score", "seconds", "params", "flops", "latency_ms"} <= set(r) for r in rows)
    assert {r["proxy"] for r in rows} == {"naswot"} and "test_efficientnet" in capsys.readouterr().out
    assert main([*args, "--max-params", "2e5", "--json", str(out)]) == 0  # test_resnet has 0.37M
    assert [(r["name"], r["proxy"]) for r in json.loads(out.read_text())] == [("test_efficientnet", default_proxy())]
    assert main([*args, "--max-params", "1000"]) == 2
    assert "no candidate fits" in capsys.readouterr().err
    assert main([*args, "--proxy", "nope"]) == 2
    assert "unknown proxy 'nope'" in capsys.readouterr().err


def test_cli_help_names_every_proxy():
    import argparse

    from kdcore.cli import _args_rank

    parser = argparse.ArgumentParser()
    _args_rank(parser)
    help_text = next(a.help for a in parser._actions if a.dest == "proxy")
    assert all(name in help_text for name in PROXIES) and proxies.FALLBACK in help_text
