"""kdcore's Gradio app: diagnose a brain-MRI slice with a teacher and a student, rank, distill, benchmark, Hub.

``build_demo(...)`` builds the UI from one builder per tab (:mod:`kdcore_app.tabs`); ``launch()`` serves it
(127.0.0.1:7860 unless ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` say otherwise) on the bundled models,
offline. Callbacks only adapt between widgets and :mod:`kdcore.service`, which does the work.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from kdcore.errors import KDCoreError
from kdcore.service import NOTICE
from kdcore_app.state import AppState
from kdcore_app.tabs import benchmark, diagnose, distill, hub, rank

INTRO = ("kdcore turns a large brain-tumour MRI classifier (the *teacher*, a ResNet-18) into a small, fast one (the "
         "*student*) by knowledge distillation, and shows what both look at. **Diagnose** compares two models "
         "on one slice with LRP and Grad-CAM heat maps (the student list also offers *student-tiny*, under 1% of "
         "the teacher's size); **Rank students** scores candidate architectures against "
         "the teacher without training them; **Distill** trains a new student; **Benchmark** measures models side "
         "by side; **Hub** pulls and pushes models. Everything runs on this server's CPU; Rank, Distill and "
         "Benchmark start on a small bundled demo set. More in the project's README and `docs/` (`docs/app.md` for "
         "this app) and in the model cards below.")
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")


def build_demo(
    teacher: str | None = None,
    student: str | None = None,
    samples_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> gr.Blocks:
    """The app. Models default to ``KDCORE_TEACHER``/``KDCORE_STUDENT`` or the bundled folders; ``data_dir``
    (default ``KDCORE_DATA``) is the labelled folder for Rank, Distill and Benchmark; runs go to ``runs_dir``
    (default :func:`kdcore.paths.runs_dir`).
    """
    state = AppState.create(teacher, student, samples_dir, data_dir, runs_dir)
    with gr.Blocks(title="kdcore: brain-MRI distillation") as demo:
        gr.Markdown(f"# kdcore: distill brain-MRI classifiers, explain both\n**⚠ {NOTICE}**", elem_id="notice")
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Accordion("Model cards", open=False):
            for name in state.models():
                gr.Markdown(f"### {name}\n\n" + model_card(state, name))
        with gr.Tabs() as tabs:
            d, r, k, b, h = (tab.build(state) for tab in (diagnose, rank, distill, benchmark, hub))
        lists = [d.teacher, d.student, r.teacher, k.teacher, b.models, h.model]

        def refresh() -> list[dict]:
            return [gr.update(choices=state.models()) for _ in lists]

        k.finished.then(refresh, None, lists, api_name=False)
        h.pulled.change(refresh, None, lists, api_name=False)
        demo.load(refresh, None, lists, api_name=False)
        demo.load(lambda: distill.run_list(state), None, k.runs, api_name=False).then(*k.attach, api_name=False,
                                                                      concurrency_limit=None)
        k.to_diagnose.click(lambda name: (gr.update(value=name), gr.Tabs(selected="diagnose")) if name
                            else (gr.update(), gr.Tabs()), k.result, [d.student, tabs], api_name=False)
        r.to_distill.click(lambda name, data: (gr.update(value=name), data, gr.Tabs(selected="distill")),
                           [r.pick, r.data], [k.arch, k.data, tabs], api_name=False)
    return demo


def model_card(state: AppState, name: str) -> str:
    """The card (``README.md`` without its front matter) of the model list's ``name``, or a one-line note."""
    try:
        text = (state.store.folder(name) / "README.md").read_text()
    except (KDCoreError, OSError):
        return "(no model card)"
    return text.split("---", 2)[2] if text.startswith("---") else text


def launch() -> None:
    """Serve the app (offline, bundled models) on ``GRADIO_SERVER_NAME:GRADIO_SERVER_PORT`` (127.0.0.1:7860)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_demo().queue(max_size=32, default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), theme=THEME,
    )
