"""The published proxy validation: its file, the accuracy/latency Pareto set, the plain-words note per proxy."""

from __future__ import annotations

from kdcore.rank import proxies
from kdcore.rank.validation import Validation, accuracy_text, load_validation, pareto_set, with_accuracy


def test_pareto_set_keeps_exactly_the_undominated_points():
    points = {"fast": (0.80, 1.0), "slow_best": (0.95, 9.0), "middle": (0.90, 3.0), "dominated": (0.85, 4.0),
              "tie_slower": (0.90, 3.5)}
    assert pareto_set(points) == {"fast", "slow_best", "middle"}
    assert pareto_set({}) == set() and pareto_set({"one": (0.5, 2.0)}) == {"one"}


def test_rows_gain_the_distilled_accuracy_and_the_front_among_the_ranked_only():
    v = Validation(distilled={"a": {"accuracy": 0.9, "std": 0.01}, "b": {"accuracy": 0.8, "std": 0.02},
                              "c": {"accuracy": 0.95, "std": 0.0}})
    rows = with_accuracy([{"name": "a", "latency_ms": 2.0}, {"name": "b", "latency_ms": 3.0},
                          {"name": "new", "latency_ms": 1.0}], v)  # c is not in this ranking
    by = {r["name"]: r for r in rows}
    assert by["a"]["distilled_accuracy"] == 0.9 and by["a"]["distilled_std"] == 0.01 and by["a"]["pareto"]
    assert not by["b"]["pareto"]  # a is more accurate and faster
    assert by["new"]["distilled_accuracy"] is None and not by["new"]["pareto"]
    assert accuracy_text(by["a"]) == "0.900 ± 0.010" and accuracy_text(by["new"]) is None


def test_the_shipped_validation_loads_and_a_missing_file_is_empty(tmp_path):
    assert load_validation(tmp_path / "none.json") == Validation()
    shipped = load_validation()
    assert len(shipped.distilled) >= 24 and "KD" in shipped.recipe and shipped.teacher == "teacher"
    assert shipped.command.startswith("python -m bench")
    assert set(shipped.proxies) <= set(proxies.PROXIES)
    assert all(0 < d["accuracy"] <= 1 and d["std"] >= 0 for d in shipped.distilled.values())


def test_the_note_says_in_plain_words_whether_a_proxy_passed_the_bar():
    measured = {"good": {"tau": 0.6, "low": 0.3, "high": 0.8, "p": 0.001, "n": 24},
                "weak": {"tau": 0.2, "low": -0.1, "high": 0.5, "p": 0.1, "n": 24}}
    good = proxies.validation_note("good", measured, "teacher")
    assert good.startswith("Measured Kendall tau against distilled accuracy: +0.60") and "⚠" not in good
    weak = proxies.validation_note("weak", measured)
    assert "+0.20 (95% interval -0.10 to +0.50, p = 0.100, 24 candidates distilled from `" in weak
    assert "⚠ Below the bar" in weak
    assert "no proxy has" not in weak and "guide only" in weak
    assert "no proxy has" in proxies.validation_note("weak", {"weak": measured["weak"]})
    assert "proxies that pass the bar" in proxies.validation_note("random", measured) and "good" in \
        proxies.validation_note("random", measured)
