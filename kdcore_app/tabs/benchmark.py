"""The Benchmark tab: models of the list evaluated on a labelled folder, side by side."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import pandas as pd

from kdcore.service import evaluate_models
from kdcore_app.errors import user_errors
from kdcore_app.figures import benchmark_figures
from kdcore_app.measured import REPORTS, report_markdown
from kdcore_app.state import DATA_HELP, AppState, display_name


class BenchmarkTab(NamedTuple):
    models: gr.CheckboxGroup


#: The columns shown by default (the page's width); the rest appear with "all columns".
COMPACT = ["model", "accuracy", "macro-F1", "M params", "latency ms", "ECE"]


def results_table(results: list[dict], all_columns: bool = False) -> pd.DataFrame:
    """One row per evaluated model: accuracy, macro-F1, size, latency, calibration (ECE); with ``all_columns`` also
    the architecture, images, per-class F1, cost, the fitted temperature and the ECE at temperature 1."""
    rows = [[r["name"], r["arch"], r["num_images"], round(r["accuracy"], 4), round(r["macro_f1"], 4),
             *[round(m["f1"], 4) for m in r["per_class"].values()], round(r["params"] / 1e6, 2),
             round(r["flops"] / 1e6, 1), round(r["latency_ms_batch1"], 2), round(r["temperature"], 3),
             round(r["ece"], 4), round(r["uncalibrated"]["ece"], 4)] for r in results]
    headers = ["model", "arch", "images", "accuracy", "macro-F1",
               *[f"F1 {display_name(c)}" for c in results[0]["per_class"]], "M params", "MFLOPs", "latency ms",
               "temperature", "ECE", "ECE at T=1"]
    table = pd.DataFrame(rows, columns=headers)
    return table if all_columns else table[COMPACT]


def build(state: AppState) -> BenchmarkTab:
    """Models and data folder in; the results table (compact, or every column) and three plots out."""

    @user_errors
    def on_benchmark(names: list[str], data: str, all_columns: bool,
                     progress: gr.Progress = gr.Progress()):  # noqa: B008 (how Gradio asks)
        results = evaluate_models(state.store, names, data, lambda f, what: progress(f, desc=what))
        return results_table(results, all_columns), *benchmark_figures(results), results

    def on_columns(results: list[dict] | None, all_columns: bool):
        return results_table(results, all_columns) if results else gr.Dataframe()

    with gr.Tab("Benchmark", id="benchmark"):
        with gr.Row():
            models = gr.CheckboxGroup(state.models(), value=state.models(), label="models")
            data = gr.Textbox(state.data_dir, label="data", info=DATA_HELP, elem_id="benchmark-data")
        run = gr.Button("Benchmark", variant="primary", elem_id="benchmark-run")
        all_columns = gr.Checkbox(False, label="all columns (architecture, per-class F1, FLOPs, temperature)",
                                  elem_id="benchmark-all-columns")
        table = gr.Dataframe(label="results", interactive=False, wrap=True, elem_id="benchmark-table")
        plots = [gr.Plot(), gr.Plot(), gr.Plot()]
        last = gr.State()
        with gr.Accordion("Measured figures: what the project has measured, with seed-level intervals", open=False):
            first = next(iter(REPORTS))
            report = gr.Dropdown(list(REPORTS), value=first, label="report", elem_id="benchmark-report")
            shown = gr.Markdown(report_markdown(first), elem_id="benchmark-report-text")
    run.click(on_benchmark, [models, data, all_columns], [table, *plots, last], api_name="benchmark")
    all_columns.change(on_columns, [last, all_columns], table, api_name=False)
    report.change(report_markdown, report, shown, api_name="report")
    return BenchmarkTab(models)
