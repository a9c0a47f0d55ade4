"""The Diagnose tab: one slice through the teacher and the student, their predictions and explanation maps."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import numpy as np

from kdcore.explain import METHODS
from kdcore.explain.localise import parse_box
from kdcore.explain.render import MAX_ALPHA
from kdcore.service import Diagnosis, Prediction, diagnose
from kdcore_app.errors import require, user_errors
from kdcore_app.state import FORMATS, IMAGE_TYPES, AppState, display_name

MAX_SLICE = 4096  # the slice slider's range before a volume sets it
RUNTIMES = {"onnxruntime": "ONNX Runtime", "pytorch": "PyTorch"}
BOX_HELP = "x_center y_center width height, fractions of the slice (a box file's line), e.g. 0.62 0.41 0.2 0.18"
HOW_TO_READ = ("**How to read the maps.** LRP is signed: **red** marks what speaks *for* the predicted class, "
               "**blue** what speaks *against* it, white neither. Grad-CAM is coarse (one value per cell of the "
               "model's last feature map, smoothed) and always ≥ 0: bright is where the model looked most. Each "
               "method has one colour scale, shared by teacher and student (the bar in each map); click a map to "
               "enlarge it. A tumour box typed under the upload is outlined in **green** on every map, to see "
               "whether the maps point at it.")
# The maps in a 4-column grid (2 columns below 1100 px), whole, never scrolled inside the gallery; captions above
# each map, wrapping instead of ending in an ellipsis, clear of the colour bar.
CSS = """<style>
#heatmaps, #heatmaps .grid-wrap { height: auto !important; min-height: 0 !important; max-height: none !important;
  overflow: visible !important; }
#heatmaps .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; }
@media (max-width: 1100px) {
  #heatmaps .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; } }
#heatmaps .thumbnail-item { aspect-ratio: auto; height: auto; overflow: visible; display: flex;
  flex-direction: column-reverse; }
#heatmaps .thumbnail-item img { height: auto; }
#heatmaps .caption-label { position: static; max-width: none; white-space: normal; overflow: visible;
  text-overflow: clip; border: none; background: none; padding: 2px 4px; font-size: 14px; }
#heatmaps .caption { white-space: normal; overflow: visible; text-overflow: clip; }
</style>"""


class DiagnoseTab(NamedTuple):
    teacher: gr.Dropdown
    student: gr.Dropdown


def heatmap_gallery(d: Diagnosis) -> list[tuple[np.ndarray, str]]:
    """Four overlays ``(H, W, 3)`` with captions: the teacher's LRP and Grad-CAM, then the student's."""
    return [(p.overlays[m], f"{p.name} · {METHODS[m].title}") for p in (d.teacher, d.student) for m in METHODS
            if m in p.overlays]


def model_summary(p: Prediction) -> str:
    """One model's answer (marked when the model flags the slice as out of distribution), speed and size."""
    mark = f"  \n⚠️ *untrustworthy: {p.ood.why()}*" if p.flagged else ""
    return (f"**{p.name}** (`{p.arch}`): predicts **{display_name(p.label)}** ({p.confidence:.0%}){mark}  \n"
            f"inference {p.inference_ms:.1f} ms ({RUNTIMES.get(p.runtime, p.runtime)}) · "
            f"{p.params / 1e6:.2f} M params · {p.size_bytes / 2**20:.1f} MiB")


def slice_note(notes: dict) -> str:
    """Which slice of the file the models saw and how its intensities were read."""
    where = f"slice {notes['slice'] + 1} of {notes['slices']}" if notes["slices"] > 1 else "one slice"
    return f"<small>{notes['format']} · {where} · intensity: {notes['intensity']}</small>"


def build(state: AppState) -> DiagnoseTab:
    """The upload with the slice it gave, the two model lists, and per model its probabilities, summary and maps."""

    @user_errors
    def on_diagnose(path: str | None, teacher: str, student: str, slice_index: float | None, opacity: float,
                    box: str | None = None):
        require(path, f"Upload an MRI slice ({FORMATS}) or pick a sample first.")
        d = diagnose(path, state.store, teacher, student, slice_index=None if slice_index is None else int(slice_index),
                     opacity=opacity, box=parse_box(box, "tumour box") if box and box.strip() else None)
        probs = [{display_name(c): float(v) for c, v in zip(p.class_names, p.probs)} for p in (d.teacher, d.student)]
        parts = (d.warning(), f"{d.agreement(display_name)}  \n<small>all results in {d.seconds:.2f} s</small>")
        summary = "\n\n".join(part for part in parts if part)
        slices = d.notes["slices"]
        slider = (gr.Slider(maximum=slices - 1, value=d.notes["slice"], visible=True) if slices > 1
                  else gr.Slider(value=0, visible=False))
        return (probs[0], model_summary(d.teacher), probs[1], model_summary(d.student), summary, heatmap_gallery(d),
                d.shown, slice_note(d.notes), slider, d)

    def on_upload(path: str | None, teacher: str, student: str, opacity: float, box: str | None):
        if path:
            return on_diagnose(path, teacher, student, None, opacity, box)
        return None, "", None, "", "", None, None, "", gr.Slider(value=0, visible=False), None

    def on_opacity(d: Diagnosis | None, opacity: float):
        if d is None:
            return gr.Gallery()
        d.render(opacity)
        return heatmap_gallery(d)

    with gr.Tab("Diagnose", id="diagnose"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                upload = gr.File(label=f"MRI slice ({FORMATS})", file_types=list(IMAGE_TYPES),
                                 type="filepath", elem_id="upload")
                if state.samples:
                    sample = gr.Image(type="filepath", visible=False)
                    gr.Examples([[str(p)] for p in state.samples], inputs=[sample], label="bundled samples (click one)",
                                examples_per_page=len(state.samples), elem_id="samples")
                    sample.change(lambda p: p, sample, upload, api_name=False)
                shown = gr.Image(label="the slice the models saw", interactive=False, height=260, elem_id="upload-view",
                                 buttons=["fullscreen"])
                note = gr.Markdown(elem_id="slice-note")
                # hidden until a volume arrives, then ranging over its slices (API callers may ask for any)
                slice_index = gr.Slider(0, MAX_SLICE, value=0, step=1, label="slice of the volume", visible=False,
                                        elem_id="slice")
                with gr.Row():  # custom values allowed: the list grows during a session; the store judges names
                    teacher = gr.Dropdown(state.models(), value="teacher", label="teacher", allow_custom_value=True)
                    student = gr.Dropdown(state.models(), value="student", label="student", allow_custom_value=True)
                opacity = gr.Slider(0.1, 1.0, value=MAX_ALPHA, step=0.05, label="map opacity", elem_id="opacity")
                box = gr.Textbox(label="show tumour box (optional)", elem_id="box", max_lines=1,
                                 placeholder=BOX_HELP)
                go_btn = gr.Button("Diagnose", variant="primary")
            with gr.Column(scale=2, min_width=300):
                results, heatmaps = _results()
        gr.HTML(CSS)
        last = gr.State()  # the session's last diagnosis, re-drawn when the opacity changes
    outputs = [*results, shown, note, slice_index, last]
    go_btn.click(on_diagnose, [upload, teacher, student, slice_index, opacity, box], outputs, api_name="diagnose")
    box.submit(on_diagnose, [upload, teacher, student, slice_index, opacity, box], outputs, api_name=False)
    upload.change(on_upload, [upload, teacher, student, opacity, box], outputs, api_name=False)
    # user input only (not the values the callbacks set); while a slider moves, only its latest value is run
    slice_index.input(on_diagnose, [upload, teacher, student, slice_index, opacity, box], outputs, api_name=False,
                      trigger_mode="always_last")
    opacity.input(on_opacity, [last, opacity], heatmaps, api_name=False, trigger_mode="always_last")
    return DiagnoseTab(teacher, student)


def _results() -> tuple[list[gr.components.Component], gr.Gallery]:
    """Teacher probabilities and summary, student's, the out-of-distribution warning and agreement sentence, the
    heatmaps (callback order), and the heatmaps again."""
    agreement = gr.Markdown(elem_id="agreement")
    with gr.Row():
        with gr.Column(min_width=160):
            t_label = gr.Label(num_top_classes=4, label="teacher (calibrated)", show_heading=False,
                               elem_id="teacher-probs")
            t_info = gr.Markdown(elem_id="teacher-info")
        with gr.Column(min_width=160):
            s_label = gr.Label(num_top_classes=4, label="student (calibrated)", show_heading=False,
                               elem_id="student-probs")
            s_info = gr.Markdown(elem_id="student-info")
    gr.Markdown("**Explanations**: one colour scale per method, shared by both models.")
    heatmaps = gr.Gallery(label="explanations", show_label=False, columns=4, object_fit="contain", height="auto",
                          allow_preview=True, buttons=["fullscreen"], elem_id="heatmaps")
    gr.Markdown(HOW_TO_READ, elem_id="how-to-read")
    gr.Markdown("\n".join(f"- {m.caption()}: {m.description}" for m in METHODS.values()))
    return [t_label, t_info, s_label, s_info, agreement, heatmaps], heatmaps
