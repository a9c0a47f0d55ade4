"""The ranking plot: score against latency, the accuracy/latency Pareto set drawn as stars, figures on hover."""

from __future__ import annotations

from kdcore_app.figures import rank_figure


def _row(name: str, score: float, latency: float, acc: float | None = None, pareto: bool = False) -> dict:
    return {"name": name, "score": score, "latency_ms": latency, "params": 1e6, "proxy": "flops",
            "distilled_accuracy": acc, "distilled_std": 0.01 if acc is not None else None, "pareto": pareto}


def test_the_plot_is_score_against_latency_with_the_pareto_set_as_stars():
    rows = [_row("a", 3.0, 2.0, 0.9, True), _row("b", 2.0, 5.0, 0.8), _row("c", 1.0, 1.0)]
    fig = rank_figure(rows)
    trace = fig.data[0]
    assert list(trace.x) == [2.0, 5.0, 1.0] and list(trace.y) == [3.0, 2.0, 1.0]
    assert list(trace.marker.symbol) == ["star", "circle", "circle"]
    hover = [c[3] for c in trace.customdata]
    assert hover == ["distilled 0.900 ± 0.010 · Pareto", "distilled 0.800 ± 0.010", "not distilled"]
    assert "Pareto" in fig.layout.title.text and fig.layout.xaxis.title.text.startswith("latency ms")
    assert rank_figure([_row("c", 1.0, 1.0)]).layout.title.text is None  # nothing distilled: no legend line
