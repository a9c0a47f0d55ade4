"""The Diagnose tab: one slice through the teacher and the student, their predictions and explanation maps."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
import numpy as np

from kdcore.explain import METHODS
from kdcore.service import Diagnosis, Prediction, diagnose
from kdcore_app.errors import require, user_errors
from kdcore_app.state import IMAGE_TYPES, AppState

RUNTIMES = {"onnxruntime": "ONNX Runtime", "pytorch": "PyTorch"}


class DiagnoseTab(NamedTuple):
    teacher: gr.Dropdown
    student: gr.Dropdown


def heatmap_gallery(d: Diagnosis) -> list[tuple[np.ndarray, str]]:
    """Four overlays ``(H, W, 3)`` in one row: the teacher's LRP and Grad-CAM, then the student's."""
    return [(p.overlays[m], f"{p.name} · {METHODS[m].title}") for p in (d.teacher, d.student) for m in METHODS
            if m in p.overlays]


def model_summary(p: Prediction) -> str:
    """One model's answer (marked when the model flags the slice as out of distribution), speed and size."""
    mark = f"  \n⚠️ *untrustworthy: {p.ood.why()}*" if p.flagged else ""
    return (f"**{p.name}** (`{p.arch}`): predicts **{p.label}** ({p.confidence:.0%}){mark}  \n"
            f"inference {p.inference_ms:.1f} ms ({RUNTIMES.get(p.runtime, p.runtime)}) · "
            f"{p.params / 1e6:.2f} M params · {p.size_bytes / 2**20:.1f} MiB")


def build(state: AppState) -> DiagnoseTab:
    """The upload, the two model lists, and per model its probabilities, summary and maps."""

    @user_errors
    def on_diagnose(path: str | None, teacher: str, student: str):
        require(path, "Upload an MRI slice (JPEG or PNG) or pick a sample first.")
        d = diagnose(path, state.store, teacher, student)
        probs = [{c: float(v) for c, v in zip(p.class_names, p.probs)} for p in (d.teacher, d.student)]
        parts = (d.warning(), f"{d.agreement()}  \n<small>all results in {d.seconds:.2f} s</small>")
        summary = "\n\n".join(part for part in parts if part)
        return probs[0], model_summary(d.teacher), probs[1], model_summary(d.student), summary, heatmap_gallery(d)

    def on_upload(path: str | None, teacher: str, student: str):
        return on_diagnose(path, teacher, student) if path else (None, "", None, "", "", None)

    with gr.Tab("Diagnose", id="diagnose"), gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="MRI slice (JPEG or PNG)", file_types=list(IMAGE_TYPES), type="filepath",
                             elem_id="upload")
            if state.samples:
                gr.Examples([[str(p)] for p in state.samples], inputs=[upload], label="bundled samples")
            with gr.Row():  # custom values allowed: the list grows during a session; the store judges names
                teacher = gr.Dropdown(state.models(), value="teacher", label="teacher", allow_custom_value=True)
                student = gr.Dropdown(state.models(), value="student", label="student", allow_custom_value=True)
            go_btn = gr.Button("Diagnose", variant="primary")
        with gr.Column(scale=2):
            outputs = _results()
    go_btn.click(on_diagnose, [upload, teacher, student], outputs, api_name="diagnose")
    upload.change(on_upload, [upload, teacher, student], outputs, api_name=False)
    return DiagnoseTab(teacher, student)


def _results() -> list[gr.components.Component]:
    """Teacher probabilities and summary, student's, the out-of-distribution warning and agreement sentence, the
    heatmaps (callback order)."""
    agreement = gr.Markdown(elem_id="agreement")
    with gr.Row():
        with gr.Column():
            t_label = gr.Label(num_top_classes=4, label="teacher (calibrated)", elem_id="teacher-probs")
            t_info = gr.Markdown(elem_id="teacher-info")
        with gr.Column():
            s_label = gr.Label(num_top_classes=4, label="student (calibrated)", elem_id="student-probs")
            s_info = gr.Markdown(elem_id="student-info")
    heatmaps = gr.Gallery(label="explanations: one colour scale per method, shared by both models", columns=4,
                          rows=1, object_fit="contain", height=260, elem_id="heatmaps")
    gr.Markdown("\n".join(f"- {m.caption()}: {m.description}" for m in METHODS.values()))
    return [t_label, t_info, s_label, s_info, agreement, heatmaps]
