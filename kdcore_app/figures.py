"""Plotly figures of the app: training curves, the student ranking, benchmark plots (presentation only)."""

from __future__ import annotations

import math

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdcore.rank.validation import accuracy_text
from kdcore_app.state import display_name

MARGIN = dict(l=10, r=10, t=30, b=10)


def curves_figure(history: list[dict]) -> go.Figure:
    """Live training curves from ``step`` and ``epoch`` events: per-step loss terms (left axis) and per-epoch
    validation accuracy (right axis)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    steps = [h for h in history if h["event"] == "step"]
    epochs = [h for h in history if h["event"] == "epoch"]
    x = list(range(1, len(steps) + 1))
    fig.add_trace(go.Scatter(x=x, y=[s["loss"] for s in steps], name="loss", mode="lines"))
    for term in (steps[-1]["terms"] if steps else {}):
        fig.add_trace(go.Scatter(x=x, y=[s["terms"].get(term) for s in steps], name=term, mode="lines"))
    if epochs:
        per_epoch = max(1, len(steps) // len(epochs))
        fig.add_trace(go.Scatter(x=[(i + 1) * per_epoch for i in range(len(epochs))],
                                 y=[e["val_accuracy"] for e in epochs], name="val accuracy",
                                 mode="lines+markers"), secondary_y=True)
    fig.update_layout(height=340, margin=MARGIN, xaxis_title="step", legend=dict(orientation="h"))
    fig.update_yaxes(title_text="weighted loss", secondary_y=False)
    fig.update_yaxes(title_text="val accuracy", range=[0, 1], secondary_y=True)
    return fig


def rank_figure(rows: list[dict], annotate: int = 3) -> go.Figure:
    """The proxy's score against batch-1 latency, coloured by parameters (``rows`` of the ranking, best first):
    every candidate's figures on hover, the ``annotate`` best named on the plot, the accuracy/latency Pareto set
    of the candidates with a measured distilled accuracy drawn as stars; a log score axis when the scores are
    positive and span more than three decades (SynFlow)."""
    scores = [r["score"] for r in rows]
    log = min(scores) > 0 and max(scores) > 1000 * min(scores)

    def acc(r: dict) -> str:
        text = accuracy_text(r)
        return "not distilled" if text is None else f"distilled {text}" + (" · Pareto" if r["pareto"] else "")

    fig = go.Figure(go.Scatter(
        x=[r["latency_ms"] for r in rows], y=scores, mode="markers", name="candidates",
        customdata=[[r["name"], r["params"] / 1e6, i, acc(r)] for i, r in enumerate(rows, 1)],
        marker=dict(size=11, color=[r["params"] / 1e6 for r in rows], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="params M"),
                    symbol=["star" if r.get("pareto") else "circle" for r in rows],
                    line=dict(width=[2 if r.get("pareto") else 0 for r in rows], color="crimson")),
        hovertemplate=("#%{customdata[2]} %{customdata[0]}<br>%{x:.2f} ms · %{customdata[1]:.2f} M params<br>"
                       "score %{y:.4g}<br>%{customdata[3]}<extra></extra>")))
    for i, r in enumerate(rows[:annotate], 1):
        fig.add_annotation(x=r["latency_ms"], y=math.log10(r["score"]) if log else r["score"],
                           text=f"#{i} {r['name']}", showarrow=True, arrowhead=2, ax=40, ay=-30 * i,
                           bgcolor="rgba(255,255,255,0.8)")
    proxy = rows[0].get("proxy", "proxy")
    title = ("stars: the accuracy/latency Pareto set of the distilled candidates"
             if any(r.get("pareto") for r in rows) else None)
    fig.update_layout(xaxis_title="latency ms (batch 1, this CPU)", yaxis_title=f"{proxy} score (higher is better)",
                      height=380, margin=MARGIN | dict(t=40), hovermode="closest",
                      yaxis_type="log" if log else "linear", title=dict(text=title, font=dict(size=12)))
    return fig


def benchmark_figures(results: list[dict]) -> tuple[go.Figure, go.Figure, go.Figure]:
    """Per-class F1 bars, confusion matrices side by side, reliability diagram with bin counts (``results`` of the
    evaluations)."""
    f1 = go.Figure([go.Bar(name=r["name"], x=[display_name(c) for c in r["per_class"]],
                           y=[m["f1"] for m in r["per_class"].values()]) for r in results])
    f1.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="F1"), height=320, margin=MARGIN,
                     title="per-class F1")
    cm = make_subplots(rows=1, cols=len(results), subplot_titles=[r["name"] for r in results])
    for i, r in enumerate(results, start=1):
        names = [display_name(c) for c in r["class_names"]]
        cm.add_trace(go.Heatmap(z=r["confusion_matrix"], x=names, y=names, coloraxis="coloraxis",
                                text=r["confusion_matrix"], texttemplate="%{text}"), row=1, col=i)
        cm.update_yaxes(autorange="reversed", row=1, col=i)
    cm.update_layout(coloraxis=dict(colorscale="Blues"), height=340, margin=MARGIN | dict(t=40),
                     title="confusion matrices (rows: true, columns: predicted)")
    return f1, cm, reliability_figure(results)


def reliability_figure(results: list[dict]) -> go.Figure:
    """Reliability diagram of each evaluated model before (temperature 1, dotted) and after calibration (solid),
    with the images per confidence bin below (15 bins, ``results`` of the evaluations)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             name="perfect calibration"), row=1, col=1)
    palette = plotly.colors.qualitative.Plotly
    for i, r in enumerate(results):
        colour = palette[i % len(palette)]
        for bins, ece, when, dash in ((r["uncalibrated"]["reliability"], r["uncalibrated"]["ece"], "T=1", "dot"),
                                      (r["reliability"], r["ece"], f"T={r['temperature']:.2f}", "solid")):
            name = f"{r['name']} {when} (ECE {ece:.3f})"
            fig.add_trace(go.Scatter(
                x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers",
                name=name, legendgroup=name, line=dict(color=colour, dash=dash),
                customdata=[b["count"] for b in bins],
                hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} images<extra></extra>"),
                row=1, col=1)
            fig.add_trace(go.Bar(x=[(b["lo"] + b["hi"]) / 2 for b in bins], y=[b["count"] for b in bins],
                                 width=1 / 15 / 2.2, name=name, legendgroup=name, showlegend=False,
                                 marker=dict(color=colour, opacity=1.0 if dash == "solid" else 0.4)), row=2, col=1)
    fig.update_xaxes(range=[0, 1.03], row=1, col=1)
    fig.update_xaxes(range=[0, 1.03], title="confidence (15 bins)", row=2, col=1)
    fig.update_yaxes(range=[0, 1], title="accuracy", row=1, col=1)
    fig.update_yaxes(type="log", title="images", row=2, col=1)
    fig.update_layout(height=460, margin=MARGIN, barmode="group", title="reliability diagram (dotted: before "
                      "calibration, solid: after)")
    return fig
