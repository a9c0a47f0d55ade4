"""Plotly figures of the app: training curves, the DisWOT ranking, benchmark plots (presentation only)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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


def rank_figure(rows: list[dict]) -> go.Figure:
    """DisWOT score against parameters, coloured by batch-1 latency (``rows`` of the ranking, best first)."""
    fig = go.Figure(go.Scatter(
        x=[r["params"] / 1e6 for r in rows], y=[r["score"] for r in rows], mode="markers+text",
        text=[r["name"] for r in rows], textposition="top center",
        marker=dict(size=11, color=[r["latency_ms"] for r in rows], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="latency ms")),
        hovertemplate="%{text}<br>%{x:.2f} M params<br>score %{y:.4g}<extra></extra>"))
    fig.update_layout(xaxis_title="parameters (M)", yaxis_title="DisWOT score (higher is better)", height=380,
                      margin=MARGIN)
    return fig


def benchmark_figures(results: list[dict]) -> tuple[go.Figure, go.Figure, go.Figure]:
    """Per-class F1 bars, confusion matrices side by side, reliability diagram (``results`` of the evaluations)."""
    f1 = go.Figure([go.Bar(name=r["name"], x=list(r["per_class"]), y=[m["f1"] for m in r["per_class"].values()])
                    for r in results])
    f1.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="F1"), height=320, margin=MARGIN,
                     title="per-class F1")
    cm = make_subplots(rows=1, cols=len(results), subplot_titles=[r["name"] for r in results])
    for i, r in enumerate(results, start=1):
        names = r["class_names"]
        cm.add_trace(go.Heatmap(z=r["confusion_matrix"], x=names, y=names, coloraxis="coloraxis",
                                text=r["confusion_matrix"], texttemplate="%{text}"), row=1, col=i)
        cm.update_yaxes(autorange="reversed", row=1, col=i)
    cm.update_layout(coloraxis=dict(colorscale="Blues"), height=340, margin=MARGIN | dict(t=40),
                     title="confusion matrices (rows: true, columns: predicted)")
    rel = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                                name="perfect calibration")])
    for r in results:
        rel.add_trace(go.Scatter(x=[b["confidence"] for b in r["reliability"]],
                                 y=[b["accuracy"] for b in r["reliability"]], mode="lines+markers",
                                 name=f"{r['name']} (ECE {r['ece']:.3f})"))
    rel.update_layout(xaxis=dict(range=[0, 1], title="confidence"), yaxis=dict(range=[0, 1], title="accuracy"),
                      height=340, margin=MARGIN, title="reliability diagram")
    return f1, cm, rel
