"""The Distill tab: distill the teacher into a new student, with live curves, cancel, and the server's run list.

Widget defaults are the library's (:meth:`kdcore.service.RunRegistry.defaults`, :data:`kdcore.distill.LOSSES`);
the runs themselves (their threads, folders, records and events) are :class:`kdcore.service.RunRegistry`'s, so a
run outlives the page that started it: any page lists the runs and follows one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

import gradio as gr

from kdcore.distill import FEAT_DISTANCES, LOSSES, SEM_MAPS
from kdcore.rank.candidates import CANDIDATES
from kdcore.service import data_note, zip_model
from kdcore_app.errors import require, user_errors
from kdcore_app.figures import curves_figure
from kdcore_app.state import DATA_HELP, AppState

ABOUT = ("Distill the teacher into a new student. Runs belong to the server: they go on when this page is closed "
         "or reloaded, and every page lists them below (pick one to follow it). One run trains at a time; a second "
         "one waits until the first ends.\n\n"
         "**What the teacher adds in the default run** (the `short` preset: the bundled student's architecture at "
         "80 px, 60 epochs, about 4 min on a 2-core CPU with bf16 support), measured on the full dataset over 5 "
         "seeds with a teacher trained on the same split (0.967): with the teacher (ce + kd) the student's final "
         "epoch scores 0.956 on validation; the same student trained alone (kd weight 0) scores 0.958 in as many "
         "epochs and the same time. In this preset the teacher adds nothing measurable. The figures, with their "
         "intervals: Benchmark tab, *Measured figures*.")
#: What each loss term asks of the student (a weight of 0 switches it off).
TERMS = {
    "ce": "cross-entropy with the true labels",
    "kd": "match the teacher's class probabilities, both softened by the KD temperature",
    "dkd": "decoupled KD: match the teacher's confidence in the true class and, separately, its ranking of the "
           "other classes",
    "dist": "match how the teacher's probabilities correlate, per image across classes and per class across "
            "images (Pearson)",
    "feat": "match the teacher's feature maps (through a learned 1x1 projection; cosine or L2 distance)",
    "sem": "match the teacher's explanation map of the true class (LRP or Grad-CAM)",
    "rel": "match how similar the teacher finds the images of a batch to each other",
}
SIZES = (32, 64, 96, 128)  # input sizes offered (px)
PLOT_EVERY_S = 1.0  # redraw the curves at most this often between epochs


class Widgets(NamedTuple):
    inputs: list[gr.components.Component]  # in the order ``on_distill`` takes them
    note: gr.Markdown  # which data set is in use
    start: gr.Button
    cancel: gr.Button
    runs: gr.Dropdown  # the server's runs; the one this page shows
    resume: gr.Button
    outputs: list[gr.components.Component]  # status, curves, finished student name, runs, cancel
    to_diagnose: gr.Button
    zip: gr.Button
    zip_file: gr.File


class DistillTab(NamedTuple):
    teacher: gr.Dropdown
    arch: gr.Dropdown
    data: gr.Textbox
    result: gr.Textbox  # the finished student's name in the model list
    to_diagnose: gr.Button
    finished: gr.events.Dependency  # a run's event chain, to chain model-list refreshes on
    runs: gr.Dropdown
    attach: tuple  # (function, inputs, outputs) that shows the picked run, for the page's load event


def build(state: AppState) -> DistillTab:
    """Run options in; status line, curves and the finished student out; run list, resume, zip and cancel."""

    @user_errors
    def on_distill(request: gr.Request, teacher: str, arch: str, size: int, epochs: int, max_images: int,
                   *options):
        *weights, temperature, sem_map, feat_distance, data = options
        loss = {k: float(w) for k, w in zip(LOSSES, weights) if w}
        yield from progress(state, state.runs.run(
            request.session_hash, teacher, data, student=arch, size=int(size), epochs=int(epochs),
            max_images=int(max_images) if max_images else None, loss=loss, temperature=float(temperature),
            sem_map=sem_map, feat_distance=feat_distance))

    @user_errors
    def on_attach(run_id: str | None):
        if not run_id:
            yield gr.update(), gr.update(), gr.update(), run_list(state), gr.Button(interactive=False)
            return
        yield from progress(state, state.runs.follow(run_id))

    @user_errors
    def on_resume(request: gr.Request, run_id: str | None):
        require(run_id, "Pick a stopped or interrupted run to resume.")
        yield from progress(state, state.runs.resume(request.session_hash, run_id))

    def on_submit(request: gr.Request):
        state.runs.queued(request.session_hash)
        return gr.Button("Cancel", interactive=True)

    def on_cancel(request: gr.Request, run_id: str | None):
        """"Cancelling…" until the run has ended, then the idle button: the last word whichever update lands last."""
        if not state.runs.cancel(request.session_hash, run_id or ""):
            gr.Info("No distillation to cancel.")
            yield gr.Button(interactive=False)
            return
        yield gr.Button("Cancelling…", interactive=False)
        state.runs.settle(request.session_hash, run_id or "")
        yield gr.Button("Cancel", interactive=False)

    @user_errors
    def on_zip(name: str):
        require(name, "No finished run yet.")
        return str(zip_model(state.store.folder(name), state.downloads))

    with gr.Tab("Distill", id="distill"):
        gr.Markdown(ABOUT)
        w = _widgets(state)
    w.inputs[-1].change(data_note, w.inputs[-1], w.note, api_name=False, show_progress="hidden")
    run = w.start.click(on_submit, None, w.cancel, queue=False, api_name=False).then(
        on_distill, w.inputs, w.outputs, api_name="distill", concurrency_limit=1, concurrency_id="distill")
    w.resume.click(on_submit, None, w.cancel, queue=False, api_name=False).then(
        on_resume, w.runs, w.outputs, api_name="resume_distill", concurrency_limit=1, concurrency_id="distill")
    w.runs.input(on_attach, w.runs, w.outputs, api_name="follow_run", concurrency_limit=None)
    w.cancel.click(on_cancel, w.runs, w.cancel, api_name="cancel_distill", show_progress="hidden")
    result = w.outputs[2]
    w.zip.click(on_zip, result, w.zip_file, api_name="zip_model")
    return DistillTab(w.inputs[0], w.inputs[1], w.inputs[-1], result, w.to_diagnose, run, w.runs,
                      (on_attach, w.runs, w.outputs))


def run_list(state: AppState, value: str | None = None) -> dict:
    """The run dropdown's choices (``id · status``, newest first), showing ``value`` or the live run."""
    runs = state.runs.runs()
    live = state.runs.live()
    return gr.update(choices=[(r.label(), r.id) for r in runs],
                     value=value or (live.id if live else None))


def _widgets(state: AppState) -> Widgets:
    """The tab's widgets, set to the library's defaults."""
    base = state.runs.defaults()
    bundled_arch = state.student_arch()
    archs = list(CANDIDATES) if bundled_arch in (None, *CANDIDATES) else [bundled_arch, *CANDIDATES]
    with gr.Row():
        teacher = gr.Dropdown(state.models(), value="teacher", label="teacher", allow_custom_value=True)
        arch = gr.Dropdown(archs, value=base.student, label="student architecture", allow_custom_value=True,
                           elem_id="student-arch",
                           info=f"bundled student: {bundled_arch}" if bundled_arch else None)
        size = gr.Dropdown(sorted({*SIZES, base.size}), value=base.size, label="input size (px)")
        epochs = gr.Number(base.train.epochs, label="epochs", precision=0, minimum=1, maximum=100,
                           elem_id="distill-epochs")
        images = gr.Number(base.train.max_images, label="image budget per epoch", precision=0, minimum=0,
                           elem_id="distill-images", placeholder="all training images",
                           info="empty or 0: all training images")
    data = gr.Textbox(state.data_dir, label="data", elem_id="distill-data",
                      info=DATA_HELP)
    note = gr.Markdown(data_note(state.data_dir), elem_id="distill-data-note")
    with gr.Accordion("Advanced: loss terms", open=False):
        gr.Markdown("The student minimises the weighted sum of these terms; a weight of 0 switches a term off.\n\n"
                    + "\n".join(f"- **{k}**: {TERMS.get(k, '')} (`{LOSSES[k].formula}`)" for k in LOSSES))
        with gr.Row():
            weights = [gr.Number(base.distill.loss.get(k, 0.0), label=f"weight {k}", minimum=0) for k in LOSSES]
        with gr.Row():
            temperature = gr.Number(base.distill.temperature, label="KD temperature", minimum=0.1,
                                    info="higher: softer teacher probabilities, more weight on its second guesses")
            sem_map = gr.Radio(list(SEM_MAPS), value=base.distill.sem_map, label="sem maps")
            feat_distance = gr.Radio(list(FEAT_DISTANCES), value=base.distill.feat_distance, label="feat distance")
    with gr.Row():
        start = gr.Button("Start distillation", variant="primary", elem_id="distill-start")
        cancel = gr.Button("Cancel", variant="stop", elem_id="distill-cancel", interactive=False)
    with gr.Row():
        runs = gr.Dropdown([(r.label(), r.id) for r in state.runs.runs()], value=None, label="runs on this server",
                           elem_id="distill-runs", allow_custom_value=True,
                           info="pick one to follow it or see its result")
        resume = gr.Button("Resume the picked run", elem_id="distill-resume")
    status = gr.Markdown(elem_id="distill-status")
    plot = gr.Plot(label="training curves")
    result = gr.Textbox(label="finished student", interactive=False, elem_id="distill-result")
    with gr.Row():
        to_diagnose = gr.Button("Load into Diagnose as the student", elem_id="distill-to-diagnose")
        zip_btn = gr.Button("Download as zip")
        zip_file = gr.File(label="model folder (zip)", interactive=False)
    return Widgets([teacher, arch, size, epochs, images, *weights, temperature, sem_map, feat_distance, data], note,
                   start, cancel, runs, resume, [status, plot, result, runs, cancel], to_diagnose, zip_btn, zip_file)


def progress(state: AppState, events: Iterator[dict]) -> Iterator[tuple]:
    """Run events as ``(status Markdown, curves figure, finished student name, run list, cancel button)``."""
    history: list[dict] = []
    epochs, last_plot, run_id = 0, 0.0, None
    live = gr.Button("Cancel", interactive=True)
    idle = gr.Button("Cancel", interactive=False)
    for ev in events:
        kind = ev["event"]
        if kind == "dropped":
            yield "Cancelled before it started.", gr.update(), None, run_list(state), idle
        elif kind == "start":
            cfg, epochs, run_id = ev["config"], ev["config"].train.epochs, ev["run"]
            yield (f"Run **{run_id}**: {cfg.teacher} → {cfg.student} at {cfg.size} px, {cfg.distill.describe()}, "
                   f"data {ev['data']} …", gr.update(), None, run_list(state, run_id), live)
        elif kind == "waiting":
            yield f"Waiting for run **{ev['behind']}** to finish (one run trains at a time) …", *_same(), live
        elif kind == "running":
            yield f"Run **{run_id}**: loading the data …", *_same(), live
        elif kind == "cache":
            yield f"Teacher cache: {ev['done']}/{ev['total']} images", *_same(), live
        elif kind in ("step", "epoch"):
            history.append(ev)
            if kind == "epoch" or time.perf_counter() - last_plot > PLOT_EVERY_S:
                last_plot = time.perf_counter()
                step = next(h for h in reversed(history) if h["event"] == "step")
                yield (f"epoch {step['epoch'] + 1}/{epochs} · step {step['step']}/{step['steps']} · "
                       f"loss {step['loss']:.3f} · {step['images_per_s']:.0f} img/s · "
                       f"ETA {step['eta_s'] / 60:.1f} min"), curves_figure(history), None, gr.update(), live
        elif kind == "compare":
            yield "Training done; measuring the teacher and the bundled student on the same images …", \
                *_same(), live
        elif kind == "stopped":
            where = f" at epoch {ev['epoch'] + 1}, step {ev['step']}" if "epoch" in ev else ""
            yield f"Cancelled{where}.", gr.update(), None, run_list(state, run_id or ev.get("run")), idle
        elif kind == "interrupted":
            yield (f"Run **{ev['run']}** was interrupted by a server restart: resume it to continue from its last "
                   "whole epoch.", gr.update(), None, gr.update(), idle)
        elif kind == "done":
            yield (done_message(ev, state.runs.get(ev["run"]).config.train, state.runs.get(ev["run"]).data),
                   curves_figure(history) if history else gr.update(), ev["name"], run_list(state, ev["run"]), idle)


def _same() -> tuple:
    """No change to the curves, the result and the run list."""
    return gr.update(), None, gr.update()


def done_message(ev: dict, train, data: str) -> str:
    """The finished run in plain words: total time, the student's validation accuracy next to the references',
    and what a short run can and cannot show."""
    best, ref = ev["best"], ev.get("reference") or {}
    final = ev.get("last", best)
    refs = "".join(f", {name} **{acc:.3f}**" for name, acc in ref.items())
    total = f"Done in {ev['total_s'] / 60:.1f} min" if "total_s" in ev else "Done"
    images = f"at most {train.max_images}" if train.max_images else "all"
    return (f"{total} (data, teacher cache, training and checks). Validation accuracy on the same images: "
            f"new student **{final['accuracy']:.3f}** at its final epoch (macro-F1 {final['macro_f1']:.3f}; its best "
            f"epoch, {best['epoch'] + 1}, scored {best['accuracy']:.3f}, a choice made on these images)"
            f"{refs}. The student (final epoch) is in the model list as **{ev['name']}**.\n\n"
            f"*A short run* ({train.epochs} epochs over {images} training images, data {data}): on a handful of "
            "validation images, such as the demo set's, the accuracy shows only that the pipeline works, and varies "
            "by tens of points from run to run. On the full dataset the default preset's student is measured over "
            "5 seeds, against the same student trained alone: Benchmark tab, *Measured figures*.")
