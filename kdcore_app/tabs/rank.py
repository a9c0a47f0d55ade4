"""The Rank tab: training-free ranking of candidate student architectures for a teacher, by a chosen proxy."""

from __future__ import annotations

import time
from typing import NamedTuple

import gradio as gr
import pandas as pd

from kdcore.rank.proxies import PROXIES, PUBLISHED, default_proxy, validation_note
from kdcore.rank.validation import accuracy_text
from kdcore.service import data_note, rank_students
from kdcore_app.errors import user_errors
from kdcore_app.figures import rank_figure
from kdcore_app.measured import REPORTS
from kdcore_app.state import DATA_HELP, AppState

ABOUT = ("Training-free ranking: each candidate architecture, at random initialisation, is scored by a proxy on "
         "one stratified batch (higher is better), without distilling it. Pick the proxy below; the limits drop "
         "candidates before anything is scored.")
#: the Benchmark tab's report of the proxy validation
REPORT = next(title for title, name in REPORTS.items() if name == "rank_validate")
COLUMNS = ("**score**: the proxy's value, higher is predicted better; **±**: its spread over random "
           "initialisations (0 for one); **latency ms**: median of 30 warm batch-1 forward passes on this "
           "server's CPU (measured once per candidate and kept); **MFLOPs** per image; **s**: seconds to score "
           "the candidate; **distilled acc**: the validation accuracy the candidate reached when distilled in the "
           "proxy validation (mean ± std over seeds; – if it was not distilled; ★ on the accuracy/latency Pareto "
           "set of the ranked candidates; the recipe: " + (PUBLISHED.recipe or "none shipped") + "). The validation "
           "table: Benchmark tab, measured figures, \"" + REPORT + "\" (`docs/ranking.md`).")
STAGES = {"measure": "measuring parameters, FLOPs and latency", "score": "scoring against the teacher"}


class RankTab(NamedTuple):
    teacher: gr.Dropdown
    data: gr.Textbox  # handed to the Distill tab with the picked candidate
    pick: gr.Dropdown  # the ranked candidate to distill
    to_distill: gr.Button


def ranking_table(rows: list[dict]) -> pd.DataFrame:
    """The ranking (best first) as the table shown."""
    return pd.DataFrame([{"rank": i, "candidate": r["name"], "family": r["family"], "score": float(f"{r['score']:.5g}"),
                          "±": float(f"{r['score_std']:.3g}"), "params (M)": round(r["params"] / 1e6, 3),
                          "MFLOPs": round(r["flops"] / 1e6, 1), "latency ms": r["latency_ms"],
                          "distilled acc": (accuracy_text(r) or "–") + (" ★" if r["pareto"] else ""),
                          "s": r["seconds"]} for i, r in enumerate(rows, 1)])


def proxy_note(proxy: str) -> str:
    """Which proxy ranks, and what its validation showed (:func:`kdcore.rank.proxies.validation_note`)."""
    return (f"**Proxy in use: {proxy}** ({PROXIES[proxy].summary}). {validation_note(proxy)} The validation "
            f"table: Benchmark tab, \"{REPORT}\".")


def build(state: AppState) -> RankTab:
    """Teacher, limits, proxy and candidates in; the ranking table, its plot and a candidate to distill out."""

    @user_errors
    def on_rank(teacher: str, data: str, max_params_m: float | None, max_latency: float | None, proxy: str,
                names: str, batch_size: int, progress: gr.Progress = gr.Progress()):  # noqa: B008 (how Gradio asks)
        started: dict[str, float] = {}

        def report(stage: str, done: int, total: int) -> None:
            t0 = started.setdefault(stage, time.perf_counter() - 1e-9)  # at the stage's first candidate
            left = (time.perf_counter() - t0) / max(done - 1, 1) * (total - done) if done > 1 else None
            eta = f" · about {left:.0f} s left" if left is not None else ""
            progress((done, total), desc=f"{STAGES[stage]}{eta}", unit="candidates")

        rows = rank_students(state.store, teacher, data,
                             names=[n.strip() for n in names.split(",") if n.strip()] or None,
                             max_params=int(max_params_m * 1e6) if max_params_m else None,
                             max_latency_ms=max_latency or None, proxy=proxy, batch_size=int(batch_size),
                             progress=report)
        ranked = [r["name"] for r in rows]
        return ranking_table(rows), rank_figure(rows), gr.Dropdown(choices=ranked, value=ranked[0])

    default = default_proxy()
    with gr.Tab("Rank students", id="rank"):
        gr.Markdown(ABOUT)
        with gr.Row():
            teacher = gr.Dropdown(state.models(), value="teacher", label="teacher", allow_custom_value=True)
            max_params = gr.Number(None, label="max params (M)", minimum=0, placeholder="no limit",
                                   info="empty or 0: no limit", elem_id="rank-max-params")
            max_latency = gr.Number(None, label="max latency (ms, batch 1)", minimum=0, placeholder="no limit",
                                    info="empty or 0: no limit")
            proxy = gr.Dropdown(list(PROXIES), value=default, label="proxy", elem_id="rank-proxy",
                                info=f"default: {default} (see the note below)")
        with gr.Row():
            data = gr.Textbox(state.data_dir, label="data", elem_id="rank-data",
                              info=DATA_HELP)
            names = gr.Textbox("", label="candidates (comma-separated; empty: the whole registry)",
                               elem_id="rank-names")
            batch = gr.Number(64, label="batch size", precision=0, minimum=4, elem_id="rank-batch")
        note = gr.Markdown(data_note(state.data_dir))
        about_proxy = gr.Markdown(proxy_note(default), elem_id="rank-proxy-note")
        run = gr.Button("Rank", variant="primary", elem_id="rank-run")
        table = gr.Dataframe(label="ranking", interactive=False, elem_id="rank-table")
        gr.Markdown(COLUMNS)
        plot = gr.Plot()
        with gr.Row():
            pick = gr.Dropdown([], label="candidate to distill")
            to_distill = gr.Button("Distill this candidate")
    data.change(data_note, data, note, api_name=False, show_progress="hidden")
    proxy.change(proxy_note, proxy, about_proxy, api_name=False, show_progress="hidden")
    run.click(on_rank, [teacher, data, max_params, max_latency, proxy, names, batch], [table, plot, pick],
              api_name="rank")
    return RankTab(teacher, data, pick, to_distill)
