"""The Distill tab: distill the teacher into a new student on a labelled folder, with live curves and cancel.

Widget defaults are the library's (:meth:`kdcore.service.RunRegistry.defaults`, :data:`kdcore.distill.LOSSES`);
the run itself, its folder and its queue bookkeeping are :class:`kdcore.service.RunRegistry`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

import gradio as gr

from kdcore.distill import FEAT_DISTANCES, LOSSES, SEM_MAPS
from kdcore.rank.candidates import CANDIDATES
from kdcore.service import zip_model
from kdcore_app.errors import require, user_errors
from kdcore_app.figures import curves_figure
from kdcore_app.state import AppState

ABOUT = ("Distill the teacher into a new student on the labelled folder. One run at a time per app: a second "
         "request waits in the queue (its position shows below) until the first ends.")
SIZES = (32, 64, 96, 128)  # input sizes offered (px)
PLOT_EVERY_S = 1.0  # redraw the curves at most this often between epochs


class Widgets(NamedTuple):
    inputs: list[gr.components.Component]  # in the order ``on_distill`` takes them
    start: gr.Button
    cancel: gr.Button
    outputs: list[gr.components.Component]  # status, curves, finished student name
    to_diagnose: gr.Button
    zip: gr.Button
    zip_file: gr.File


class DistillTab(NamedTuple):
    teacher: gr.Dropdown
    arch: gr.Dropdown
    result: gr.Textbox  # the finished student's name in the model list
    to_diagnose: gr.Button
    finished: gr.events.Dependency  # a run's event chain, to chain model-list refreshes on


def build(state: AppState) -> DistillTab:
    """Run options in; status line, curves and the finished student out; zip download and cancel."""

    @user_errors
    def on_distill(request: gr.Request, teacher: str, arch: str, size: int, epochs: int, max_images: int,
                   *options):
        *weights, temperature, sem_map, feat_distance, data = options
        loss = {k: float(w) for k, w in zip(LOSSES, weights) if w}
        yield from progress(state.runs.run(
            request.session_hash, teacher, data, student=arch, size=int(size), epochs=int(epochs),
            max_images=int(max_images), loss=loss, temperature=float(temperature), sem_map=sem_map,
            feat_distance=feat_distance))

    def on_submit(request: gr.Request):
        state.runs.queued(request.session_hash)
        return gr.Button("Cancel", interactive=True)

    def on_cancel(request: gr.Request):
        if state.runs.cancel(request.session_hash):
            return gr.Button("Cancelling…", interactive=False)
        gr.Info("No distillation to cancel.")
        return gr.Button()

    @user_errors
    def on_zip(name: str):
        require(name, "No finished run yet.")
        return str(zip_model(state.store.folder(name), state.downloads))

    with gr.Tab("Distill", id="distill"):
        gr.Markdown(ABOUT)
        w = _widgets(state)
    run = w.start.click(on_submit, None, w.cancel, queue=False, api_name=False).then(
        on_distill, w.inputs, w.outputs, api_name="distill", concurrency_limit=1, concurrency_id="distill")
    run.then(lambda: gr.Button("Cancel", interactive=True), None, w.cancel, api_name=False)
    w.cancel.click(on_cancel, None, w.cancel, api_name="cancel_distill", show_progress="hidden")
    result = w.outputs[-1]
    w.zip.click(on_zip, result, w.zip_file, api_name="zip_model")
    return DistillTab(w.inputs[0], w.inputs[1], result, w.to_diagnose, run)


def _widgets(state: AppState) -> Widgets:
    """The tab's widgets, set to the library's defaults."""
    base = state.runs.defaults()
    with gr.Row():
        teacher = gr.Dropdown(state.models(), value="teacher", label="teacher", allow_custom_value=True)
        arch = gr.Dropdown(list(CANDIDATES), value=base.student, label="student architecture",
                           allow_custom_value=True, elem_id="student-arch")
        size = gr.Dropdown(sorted({*SIZES, base.size}), value=base.size, label="input size (px)")
        epochs = gr.Number(base.train.epochs, label="epochs", precision=0, minimum=1, maximum=100,
                           elem_id="distill-epochs")
        images = gr.Number(base.train.max_images, label="image budget per epoch", precision=0, minimum=8)
    with gr.Row():
        weights = [gr.Number(base.distill.loss.get(k, 0.0), label=f"weight {k}", minimum=0) for k in LOSSES]
        temperature = gr.Number(base.distill.temperature, label="KD temperature", minimum=0.1)
        sem_map = gr.Radio(list(SEM_MAPS), value=base.distill.sem_map, label="sem maps")
        feat_distance = gr.Radio(list(FEAT_DISTANCES), value=base.distill.feat_distance, label="feat distance")
    data = gr.Textbox(state.data_dir, label="data folder (one sub-folder per class)")
    with gr.Row():
        start = gr.Button("Start distillation", variant="primary", elem_id="distill-start")
        cancel = gr.Button("Cancel", variant="stop", elem_id="distill-cancel")
    status = gr.Markdown(elem_id="distill-status")
    plot = gr.Plot(label="training curves")
    result = gr.Textbox(label="finished student", interactive=False, elem_id="distill-result")
    with gr.Row():
        to_diagnose = gr.Button("Load into Diagnose as the student")
        zip_btn = gr.Button("Download as zip")
        zip_file = gr.File(label="model folder (zip)", interactive=False)
    return Widgets([teacher, arch, size, epochs, images, *weights, temperature, sem_map, feat_distance, data],
                   start, cancel, [status, plot, result], to_diagnose, zip_btn, zip_file)


def progress(events: Iterator[dict]) -> Iterator[tuple]:
    """:meth:`RunRegistry.run` events as ``(status Markdown, curves figure, finished student name)`` updates."""
    history: list[dict] = []
    epochs, last_plot = 0, 0.0
    for ev in events:
        kind = ev["event"]
        if kind == "dropped":
            yield "Cancelled before it started.", gr.update(), None
        elif kind == "start":
            cfg, epochs = ev["config"], ev["config"].train.epochs
            yield (f"Starting: {cfg.teacher} → {cfg.student} at {cfg.size} px, {cfg.distill.describe()} …",
                   gr.update(), None)
        elif kind == "cache":
            yield f"Teacher cache: {ev['done']}/{ev['total']} images", gr.update(), None
        elif kind in ("step", "epoch"):
            history.append(ev)
            if kind == "epoch" or time.perf_counter() - last_plot > PLOT_EVERY_S:
                last_plot = time.perf_counter()
                step = next(h for h in reversed(history) if h["event"] == "step")
                yield (f"epoch {step['epoch'] + 1}/{epochs} · step {step['step']}/{step['steps']} · "
                       f"loss {step['loss']:.3f} · {step['images_per_s']:.0f} img/s · "
                       f"ETA {step['eta_s'] / 60:.1f} min"), curves_figure(history), None
        elif kind == "stopped":
            yield f"Cancelled at epoch {ev['epoch'] + 1}, step {ev['step']}.", gr.update(), None
        elif kind == "done":
            best = ev["best"]
            yield ((f"Done in {ev['wall_time_s'] / 60:.1f} min. Best validation accuracy **{best['accuracy']:.3f}**, "
                    f"macro-F1 **{best['macro_f1']:.3f}** (epoch {best['epoch'] + 1}). "
                    f"The student is in the model list as **{ev['name']}**."), curves_figure(history), ev["name"])
