"""The Benchmark tab: models of the list evaluated on a labelled folder, side by side."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import pandas as pd

from kdcore.service import evaluate_models
from kdcore_app.errors import user_errors
from kdcore_app.figures import benchmark_figures
from kdcore_app.state import AppState


class BenchmarkTab(NamedTuple):
    models: gr.CheckboxGroup


def results_table(results: list[dict]) -> pd.DataFrame:
    """One row per evaluated model: accuracy, macro-F1, per-class F1, size, cost, latency, calibration (the fitted
    temperature, ECE of the calibrated probabilities and at temperature 1)."""
    rows = [[r["name"], r["arch"], r["num_images"], round(r["accuracy"], 4), round(r["macro_f1"], 4),
             *[round(m["f1"], 4) for m in r["per_class"].values()], r["params"], round(r["flops"] / 1e6, 1),
             round(r["latency_ms_batch1"], 2), round(r["temperature"], 3), round(r["ece"], 4),
             round(r["uncalibrated"]["ece"], 4)] for r in results]
    headers = ["model", "arch", "images", "accuracy", "macro-F1", *[f"F1 {c}" for c in results[0]["per_class"]],
               "params", "MFLOPs", "latency ms", "temperature", "ECE", "ECE at T=1"]
    return pd.DataFrame(rows, columns=headers)


def build(state: AppState) -> BenchmarkTab:
    """Models and data folder in; the results table and three plots out."""

    @user_errors
    def on_benchmark(names: list[str], data: str):
        results = evaluate_models(state.store, names, data)
        return results_table(results), *benchmark_figures(results)

    with gr.Tab("Benchmark", id="benchmark"):
        with gr.Row():
            models = gr.CheckboxGroup(state.models(), value=["teacher", "student"], label="models")
            data = gr.Textbox(state.data_dir, label="labelled data folder (one sub-folder per class)")
        run = gr.Button("Benchmark", variant="primary")
        outputs = [gr.Dataframe(label="results", interactive=False), gr.Plot(), gr.Plot(), gr.Plot()]
    run.click(on_benchmark, [models, data], outputs, api_name="benchmark")
    return BenchmarkTab(models)
