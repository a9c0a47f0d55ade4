"""The proxy validation harness runs end to end on tiny settings: scores, distillations, statistics, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import rank_validate
from kdcore.rank.validation import load_validation


def test_agreement_statistics_on_a_perfect_and_a_reversed_proxy():
    target = list(np.linspace(0.5, 0.9, 8))
    same = rank_validate.agreement(target, target, rounds=200)
    assert same["tau"] == pytest.approx(1) and same["rho"] == pytest.approx(1) and same["top_k_hit"] == 1
    assert same["p"] < 0.05 and same["tau_low"] <= same["tau"] + 1e-9 and same["tau_high"] >= same["tau"] - 1e-9
    back = rank_validate.agreement([-t for t in target], target, rounds=200)
    assert back["tau"] == pytest.approx(-1) and back["p"] > 0.9 and back["top_k_hit"] == 0


def test_harness_runs_end_to_end_on_tiny_settings_with_parallel_runs(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "results" / "rank"
    argv = ["--data", str(tiny_data), "--teacher", str(tiny_model_dir), "--split", str(tmp_path / "split.json"),
            "--candidates", "test_resnet,test_efficientnet,resnet10t_w8", "--proxies", "params,synflow,diswot,random",
            "--runs", str(tmp_path / "runs"), "--size", "32", "--epochs", "1", "--batch-size", "8",
            "--max-images", "16", "--seeds", "0,1", "--n", "8", "--rounds", "50", "--out", str(out)]
    assert rank_validate.main([*argv, "--parallel", "2"]) == 0  # the runs as processes, then the report
    path = out.with_suffix(".json")
    res = json.loads(path.read_text())
    assert set(res["distilled"]) == {"test_resnet", "test_efficientnet", "resnet10t_w8"}
    assert all(len(d["runs"]) == 2 and 0 <= d["accuracy"] <= 1 for d in res["distilled"].values())
    assert all(r["seconds"] >= 0 for s in res["proxies"].values() for r in s.values())
    assert (out.parent / "rank_scatter.html").is_file() and (out.parent / "rank_scatter.png").is_file()
    # one tiny epoch may leave every candidate at chance (no correlation then): give the report distinct targets
    for acc, d in zip((0.5, 0.7, 0.6), res["distilled"].values()):
        d["accuracy"] = acc
    path.write_text(json.dumps(res))
    published = tmp_path / "validation.json"
    assert rank_validate.main([*argv, "--phase", "report", "--publish", str(published)]) == 0  # from the JSON alone
    res = json.loads(path.read_text())
    assert set(res["correlations"]) == {"params", "synflow", "diswot", "random"}
    assert all(-1 <= c["tau"] <= 1 and 0 < c["p"] <= 1 and c["n"] == 3 for c in res["correlations"].values())
    assert res["suggested_default"] in res["validation"] and "Kendall tau" in out.with_suffix(".md").read_text()
    shipped = load_validation(published)  # what the library would ship
    assert shipped.proxies == res["validation"] and shipped.distilled["test_resnet"]["accuracy"] == 0.5
    assert "32 px, 1 epochs x 16 images" in shipped.recipe and "seeds 0, 1" in shipped.recipe


def test_settling_compares_the_order_five_epochs_before_the_end_with_the_target():
    curves = {"a": [0.5] * 5 + [0.6, 0.9], "b": [0.6] * 5 + [0.7, 0.8], "c": [0.4] * 7}
    res = {"distilled": {n: {"accuracy": c[-1], "runs": [{"curve": c}, {"curve": c}]} for n, c in curves.items()}}
    text = "\n".join(rank_validate.settling(res))
    assert "(epoch 2 against the final epoch 7)" in text and "Kendall tau" in text
    assert "| a | 0.5000 | 0.9000 | +0.4000 | 0.9000 |" in text and "| c | 0.4000 | 0.4000 | +0.0000 |" in text
    assert rank_validate.settling({"distilled": {}}) == []


def test_within_family_agreement_only_for_families_with_enough_candidates():
    widths = ["resnet10t_w8", "resnet10t_w12", "resnet10t_w16", "resnet10t_w20", "resnet10t_w24"]
    names = [*widths, "lcnet_035", "lcnet_050"]
    acc = dict(zip(names, (0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.70)))
    res = {"distilled": {n: {"accuracy": a} for n, a in acc.items()},
           "proxies": {"size": {n: {"score": float(i)} for i, n in enumerate(names)},
                       "back": {n: {"score": -float(i)} for i, n in enumerate(names)}}}
    fams = rank_validate.within_families(res, rounds=100)
    assert list(fams) == ["ResNet"]  # two LCNets are too few
    assert fams["ResNet"]["size"]["tau"] == pytest.approx(1) and fams["ResNet"]["back"]["tau"] == pytest.approx(-1)
    res |= {"within_families": fams, "correlations": rank_validate.correlations(res, rounds=100)}
    text = "\n".join(rank_validate.family_table(res))
    assert "| proxy | ResNet (5) |" in text and "| size | +1.000 [" in text
