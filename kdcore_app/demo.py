"""kdcore's Gradio app: diagnose a brain-MRI slice with a teacher and a student, rank, distil, benchmark, Hub.

``build_demo(...)`` builds the UI; ``python app.py`` launches it (127.0.0.1:7860 unless ``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT`` say otherwise) on the bundled models, offline. Every callback only adapts between widgets
and kdcore: the work is done by ``kdcore.service``, ``kdcore.distill``, ``kdcore.engine.evaluate`` and ``kdcore.models.hub``.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdcore.paths import samples_dir as samples_dir_default
from kdcore.distill import PRESETS
from kdcore.errors import KDCoreError
from kdcore.service import METHODS, NOTICE, Diagnosis, ModelStore, diagnose, zip_model

log = logging.getLogger("kdcore.app")
TITLES = {"lrp": "LRP", "gradcam": "Grad-CAM"}
RUNTIMES = {"onnxruntime": "ONNX Runtime", "pytorch": "PyTorch"}
REPO = Path(__file__).resolve().parent
SAMPLE_TYPES = (".jpg", ".jpeg", ".png")
SHORT = PRESETS["short"]  # the Distil tab starts from the short preset


class DistilRuns:
    """Each browser session's distillations: the stop flag of the one running and the count of those queued.

    Cancel never kills the run's task: it sets the flag, and the run ends itself with a "Cancelled at ..." message in
    its own stream, so no late progress message can overwrite that status. Runs still queued are dropped when they
    reach the front of the queue.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._queued: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()

    def queued(self, session: str) -> None:
        with self._lock:
            self._queued[session] += 1

    def begin(self, session: str) -> threading.Event | None:
        """The starting run's stop flag, or None when it was cancelled while queued."""
        with self._lock:
            self._queued[session] = max(self._queued[session] - 1, 0)
            if self._dropped[session]:
                self._dropped[session] -= 1
                return None
            stop = self._running[session] = threading.Event()
            return stop

    def end(self, session: str) -> None:
        with self._lock:
            self._running.pop(session, None)

    def cancel(self, session: str) -> bool:
        """Stop the session's running run and drop its queued ones; False when it has none."""
        with self._lock:
            stop = self._running.get(session)
            if stop is not None:
                stop.set()
            self._dropped[session] = self._queued[session]
            return stop is not None or self._queued[session] > 0


def _new_run_dir(runs: Path, arch: str) -> Path:
    """A new, empty ``runs/<time>-<arch>`` folder (``-2``, ``-3``, ... when a run began in the same second)."""
    stem, k = f"{time.strftime('%Y%m%d-%H%M%S')}-{arch}", 1
    while True:
        out = runs / (stem if k == 1 else f"{stem}-{k}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            k += 1


def _user_errors(fn):
    """Show :class:`KDCoreError` (and, as one line, anything unexpected) as a UI error instead of a traceback."""

    def report(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, KDCoreError):
            return gr.Error(str(e), print_exception=False)
        log.exception("callback %s failed", fn.__name__)
        return gr.Error(f"{fn.__name__} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                        print_exception=False)

    if _is_generator(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the UI boundary
                raise report(e) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the UI boundary
            raise report(e) from None
    return wrapper


def _is_generator(fn) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


# --- figures (presentation only) ----------------------------------------------------------------------------------
def heatmap_gallery(d: Diagnosis) -> list[tuple[np.ndarray, str]]:
    """Four overlays in one row: teacher's LRP and Grad-CAM (under the teacher), then the student's."""
    return [(p.overlays[m], f"{p.name} · {TITLES[m]}") for p in (d.teacher, d.student) for m in METHODS
            if m in p.overlays]


def _model_card_md(p) -> str:
    return (f"**{p.name}** (`{p.arch}`): predicts **{p.label}** ({p.confidence:.0%})  \n"
            f"inference {p.inference_ms:.1f} ms ({RUNTIMES.get(p.runtime, p.runtime)}) · {p.params / 1e6:.2f} M params · "
            f"{p.size_bytes / 2**20:.1f} MiB")


def curves_figure(history: list[dict]) -> go.Figure:
    """Live training curves: per-step loss terms (left axis) and per-epoch validation accuracy (right axis)."""
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
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="step",
                      legend=dict(orientation="h"))
    fig.update_yaxes(title_text="weighted loss", secondary_y=False)
    fig.update_yaxes(title_text="val accuracy", range=[0, 1], secondary_y=True)
    return fig


def rank_figure(rows: list[dict]) -> go.Figure:
    """DisWOT score against parameters, coloured by batch-1 latency."""
    fig = go.Figure(go.Scatter(
        x=[r["params"] / 1e6 for r in rows], y=[r["score"] for r in rows], mode="markers+text",
        text=[r["name"] for r in rows], textposition="top center",
        marker=dict(size=11, color=[r["latency_ms"] for r in rows], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="latency ms")),
        hovertemplate="%{text}<br>%{x:.2f} M params<br>score %{y:.4g}<extra></extra>"))
    fig.update_layout(xaxis_title="parameters (M)", yaxis_title="DisWOT score (higher is better)", height=380,
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def benchmark_figures(results: list[dict]) -> tuple[go.Figure, go.Figure, go.Figure]:
    """Per-class F1 bars, confusion matrices side by side, reliability diagram."""
    f1 = go.Figure([go.Bar(name=r["name"], x=list(r["per_class"]), y=[m["f1"] for m in r["per_class"].values()])
                    for r in results])
    f1.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="F1"), height=320,
                     margin=dict(l=10, r=10, t=30, b=10), title="per-class F1")
    cm = make_subplots(rows=1, cols=len(results), subplot_titles=[r["name"] for r in results])
    for i, r in enumerate(results, start=1):
        names = r["class_names"]
        cm.add_trace(go.Heatmap(z=r["confusion_matrix"], x=names, y=names, coloraxis="coloraxis",
                                text=r["confusion_matrix"], texttemplate="%{text}"), row=1, col=i)
        cm.update_yaxes(autorange="reversed", row=1, col=i)
    cm.update_layout(coloraxis=dict(colorscale="Blues"), height=340, margin=dict(l=10, r=10, t=40, b=10),
                     title="confusion matrices (rows: true, columns: predicted)")
    rel = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                                name="perfect calibration")])
    for r in results:
        rel.add_trace(go.Scatter(x=[b["confidence"] for b in r["reliability"]],
                                 y=[b["accuracy"] for b in r["reliability"]], mode="lines+markers",
                                 name=f"{r['name']} (ECE {r['ece']:.3f})"))
    rel.update_layout(xaxis=dict(range=[0, 1], title="confidence"), yaxis=dict(range=[0, 1], title="accuracy"),
                      height=340, margin=dict(l=10, r=10, t=30, b=10), title="reliability diagram")
    return f1, cm, rel


# --- the app ------------------------------------------------------------------------------------------------------
def build_demo(
    teacher: str | None = None,
    student: str | None = None,
    samples_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> gr.Blocks:
    """The app. Models default to ``KDCORE_TEACHER``/``KDCORE_STUDENT`` or the bundled folders; ``data_dir``
    (default ``KDCORE_DATA``) is the labelled folder for Rank, Distil and Benchmark; runs go to ``runs_dir``
    (default ``KDCORE_RUNS`` or ``runs/app``).
    """
    store = ModelStore.with_defaults(teacher, student)
    samples = Path(samples_dir or samples_dir_default())
    sample_files = sorted(p for p in samples.glob("*") if p.suffix.lower() in SAMPLE_TYPES) if samples.is_dir() else []
    data_default = data_dir or os.environ.get("KDCORE_DATA", "")
    runs = Path(runs_dir or os.environ.get("KDCORE_RUNS") or REPO / "runs" / "app")
    downloads = Path(tempfile.mkdtemp(prefix="kdcore-app-"))
    distil_runs = DistilRuns()

    def choices() -> list[str]:
        return store.names()

    # ---- callbacks: Diagnose
    @_user_errors
    def on_diagnose(path, teacher_name, student_name):
        if not path:
            raise gr.Error("Upload an MRI slice (JPEG or PNG) or pick a sample first.", print_exception=False)
        d = diagnose(path, store, teacher_name, student_name)
        t, s = d.teacher, d.student
        probs = lambda p: {c: float(v) for c, v in zip(p.class_names, p.probs)}  # noqa: E731
        summary = f"{d.agreement()}  \n<small>all results in {d.seconds:.2f} s</small>"
        return (probs(t), _model_card_md(t), probs(s), _model_card_md(s), summary, heatmap_gallery(d))

    # ---- callbacks: Rank
    @_user_errors
    def on_rank(teacher_name, data, max_params_m, max_latency, variant, names, batch_size):
        from kdcore.service import rank_students

        if not data:
            raise gr.Error("Give the labelled data folder (one sub-folder per class).", print_exception=False)
        rows = rank_students(store, teacher_name, data,
                             names=[n.strip() for n in names.split(",") if n.strip()] or None,
                             max_params=int(max_params_m * 1e6) if max_params_m else None,
                             max_latency_ms=max_latency or None, variant=variant, batch_size=int(batch_size))
        table = pd.DataFrame([{"rank": i, "candidate": r["name"], "family": r["family"],
                               "score": round(r["score"], 5), "M_s": round(r["m_s"], 5),
                               "M_r": float(f"{r['m_r']:.3g}"),
                               "params (M)": round(r["params"] / 1e6, 3), "MFLOPs": round(r["flops"] / 1e6, 1),
                               "latency ms": r["latency_ms"]} for i, r in enumerate(rows, 1)])
        names = [r["name"] for r in rows]
        return table, rank_figure(rows), gr.Dropdown(choices=names, value=names[0])

    # ---- callbacks: Distil
    @_user_errors
    def on_distil(teacher_name, arch, size, epochs, max_images, ce, kd, feat, sem, rel, temperature, sem_map,
                  feat_distance, data, request: gr.Request):
        from kdcore.distill import make_config, run

        stop = distil_runs.begin(request.session_hash)
        if stop is None:
            yield "Cancelled before it started.", gr.update(), None
            return
        try:
            if not data:
                raise gr.Error("Give the labelled data folder (one sub-folder per class).", print_exception=False)
            loss = {k: float(w) for k, w in dict(ce=ce, kd=kd, feat=feat, sem=sem, rel=rel).items() if w}
            cfg = make_config("short", overrides={
                "teacher": store.ref(teacher_name), "student": arch, "size": int(size),
                "train": {"epochs": int(epochs), "max_images": int(max_images)},
                "distill": {"loss": loss, "temperature": float(temperature), "sem_map": sem_map,
                            "feat_distance": feat_distance},
            })
            out = _new_run_dir(runs, arch)
            history: list[dict] = []
            last_plot = 0.0
            yield f"Starting: {cfg.teacher} → {arch} at {size} px, {cfg.distill.describe()} …", gr.update(), None
            for ev in run(cfg, data, out, stop=stop):
                if ev["event"] == "cache":
                    yield f"Teacher cache: {ev['done']}/{ev['total']} images", gr.update(), None
                elif ev["event"] in ("step", "epoch"):
                    history.append(ev)
                    if ev["event"] == "epoch" or time.perf_counter() - last_plot > 1.0:
                        last_plot = time.perf_counter()
                        step = history[-1] if ev["event"] == "step" else next(
                            h for h in reversed(history) if h["event"] == "step")
                        status = (f"epoch {step['epoch'] + 1}/{cfg.train.epochs} "
                                  f"· step {step['step']}/{step['steps']} "
                                  f"· loss {step['loss']:.3f} · {step['images_per_s']:.0f} img/s "
                                  f"· ETA {step['eta_s'] / 60:.1f} min")
                        yield status, curves_figure(history), None
                elif ev["event"] == "stopped":
                    yield f"Cancelled at epoch {ev['epoch'] + 1}, step {ev['step']}.", gr.update(), None
                    return
                elif ev["event"] == "done":
                    name = store.add(f"distilled/{out.name}", ev["best_dir"])
                    best = ev["best"]
                    yield (f"Done in {ev['wall_time_s'] / 60:.1f} min. "
                           f"Best validation accuracy **{best['accuracy']:.3f}**, "
                           f"macro-F1 **{best['macro_f1']:.3f}** (epoch {best['epoch'] + 1}). "
                           f"The student is in the model list as **{name}**.",
                           curves_figure(history), name)
        finally:
            distil_runs.end(request.session_hash)

    def on_submit(request: gr.Request):
        distil_runs.queued(request.session_hash)
        return gr.Button("Cancel", interactive=True)

    def on_cancel(request: gr.Request):
        if distil_runs.cancel(request.session_hash):
            return gr.Button("Cancelling…", interactive=False)
        gr.Info("No distillation to cancel.")
        return gr.Button()

    @_user_errors
    def on_zip(name):
        if not name:
            raise gr.Error("No finished run yet.", print_exception=False)
        return str(zip_model(store.folder(name), downloads))

    # ---- callbacks: Benchmark
    @_user_errors
    def on_benchmark(names, data):
        from kdcore.engine.evaluate import evaluate

        if not names:
            raise gr.Error("Pick at least one model.", print_exception=False)
        if not data:
            raise gr.Error("Give the labelled data folder (one sub-folder per class).", print_exception=False)
        results = [{"name": n, **evaluate(str(store.folder(n)), data)} for n in names]
        rows = [[r["name"], r["arch"], r["num_images"], round(r["accuracy"], 4), round(r["macro_f1"], 4),
                 *[round(m["f1"], 4) for m in r["per_class"].values()], r["params"], round(r["flops"] / 1e6, 1),
                 round(r["latency_ms_batch1"], 2), round(r["ece"], 4)] for r in results]
        headers = ["model", "arch", "images", "accuracy", "macro-F1",
                   *[f"F1 {c}" for c in results[0]["per_class"]], "params", "MFLOPs", "latency ms", "ECE"]
        return (pd.DataFrame(rows, columns=headers), *benchmark_figures(results))

    # ---- callbacks: Hub
    @_user_errors
    def on_pull(repo_id, revision):
        from kdcore.models.hub import pull_model

        folder = pull_model(repo_id, revision or None)
        name = store.add(repo_id.removeprefix("hf-hub:").strip(), folder)
        return f"Pulled **{name}** into the model list ({folder})."

    @_user_errors
    def on_push(name, repo_id, token, private):
        from kdcore.models.hub import push_model

        url = push_model(store.folder(name), repo_id, token or None, bool(private))
        return f"Pushed **{name}** to {url}"

    def refresh():
        c = choices()
        return (gr.Dropdown(choices=c), gr.Dropdown(choices=c), gr.CheckboxGroup(choices=c),
                gr.Dropdown(choices=c), gr.Dropdown(choices=c), gr.Dropdown(choices=c))

    # ---- layout
    with gr.Blocks(title="kdcore: brain-MRI distillation") as demo:
        gr.Markdown(f"# kdcore: distil brain-MRI classifiers, explain both\n**⚠ {NOTICE}**", elem_id="notice")
        with gr.Tabs() as tabs:
            with gr.Tab("Diagnose", id="diagnose"):
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label="MRI slice (JPEG or PNG)", file_types=list(SAMPLE_TYPES),
                                         type="filepath", elem_id="upload")
                        if sample_files:
                            gr.Examples([[str(p)] for p in sample_files], inputs=[upload], label="bundled samples")
                        with gr.Row():
                            # custom values allowed: the list grows during a session; ModelStore judges names
                            d_teacher = gr.Dropdown(choices(), value="teacher", label="teacher",
                                                    allow_custom_value=True)
                            d_student = gr.Dropdown(choices(), value="student", label="student",
                                                    allow_custom_value=True)
                        go_btn = gr.Button("Diagnose", variant="primary")
                    with gr.Column(scale=2):
                        agreement = gr.Markdown(elem_id="agreement")
                        with gr.Row():
                            with gr.Column():
                                t_label = gr.Label(num_top_classes=4, label="teacher", elem_id="teacher-probs")
                                t_info = gr.Markdown(elem_id="teacher-info")
                            with gr.Column():
                                s_label = gr.Label(num_top_classes=4, label="student", elem_id="student-probs")
                                s_info = gr.Markdown(elem_id="student-info")
                        heatmaps = gr.Gallery(label="explanations: one colour scale per method, shared by both models",
                                              columns=4, rows=1, object_fit="contain", height=260,
                                              elem_id="heatmaps")
                        gr.Markdown("\n".join(f"- {line}" for line in METHODS.values()))
                diag_outputs = [t_label, t_info, s_label, s_info, agreement, heatmaps]
                go_btn.click(on_diagnose, [upload, d_teacher, d_student], diag_outputs, api_name="diagnose")
                upload.change(lambda path, t, s: on_diagnose(path, t, s) if path else (None, "", None, "", "", None),
                              [upload, d_teacher, d_student], diag_outputs, api_name=False)

            with gr.Tab("Rank students", id="rank"):
                gr.Markdown("DisWOT (training-free): how well each candidate architecture, at random initialisation, "
                            "matches the teacher's class-similarity (Grad-CAM or LRP maps) and sample-relation "
                            "matrices on one stratified batch. Higher is better; it is a guide, not a guarantee: on this "
                            "brain-MRI task it did not predict distilled accuracy (Kendall tau -0.36, against +0.44 "
                            "for the parameter count; docs/diswot.md).")
                with gr.Row():
                    r_teacher = gr.Dropdown(choices(), value="teacher", label="teacher", allow_custom_value=True)
                    r_max_params = gr.Number(None, label="max params (M)", minimum=0)
                    r_max_latency = gr.Number(None, label="max latency (ms, batch 1)", minimum=0)
                    r_variant = gr.Radio(["original", "thesis"], value="original",
                                         label="variant (original: Grad-CAM + L2; thesis: LRP + cosine)")
                with gr.Row():
                    r_data = gr.Textbox(data_default, label="data folder (one sub-folder per class)")
                    r_names = gr.Textbox("", label="candidates (comma-separated; empty: the whole registry)")
                    r_batch = gr.Number(64, label="batch size", precision=0, minimum=4)
                r_run = gr.Button("Rank", variant="primary")
                r_table = gr.Dataframe(label="ranking", interactive=False)
                r_plot = gr.Plot()
                with gr.Row():
                    r_pick = gr.Dropdown([], label="candidate to distil")
                    r_to_distil = gr.Button("Distil this candidate")
                r_run.click(on_rank, [r_teacher, r_data, r_max_params, r_max_latency, r_variant, r_names, r_batch],
                            [r_table, r_plot, r_pick], api_name="rank")

            with gr.Tab("Distil", id="distil"):
                gr.Markdown("Distil the teacher into a new student on the labelled folder. One run at a time per app: "
                            "a second request waits in the queue (its position shows below) until the first ends.")
                from kdcore.rank.candidates import CANDIDATES
                from kdcore.distill import LOSSES

                with gr.Row():
                    k_teacher = gr.Dropdown(choices(), value="teacher", label="teacher", allow_custom_value=True)
                    k_arch = gr.Dropdown(list(CANDIDATES), value=SHORT["student"], label="student architecture",
                                         allow_custom_value=True, elem_id="student-arch")
                    k_size = gr.Dropdown([32, 64, 96, 128], value=SHORT["size"], label="input size (px)")
                    k_epochs = gr.Number(SHORT["train"]["epochs"], label="epochs", precision=0, minimum=1,
                                         maximum=100,
                                         elem_id="distil-epochs")
                    k_images = gr.Number(SHORT["train"]["max_images"], label="image budget per epoch", precision=0,
                                         minimum=8)
                with gr.Row():
                    weights = {k: gr.Number(1.0 if k in ("ce", "kd") else 0.0, label=f"weight {k}", minimum=0)
                               for k in LOSSES}
                    k_temp = gr.Number(4.0, label="KD temperature", minimum=0.1)
                    k_map = gr.Radio(["lrp", "gradcam"], value="lrp", label="sem maps")
                    k_feat = gr.Radio(["cosine", "l2"], value="cosine", label="feat distance")
                k_data = gr.Textbox(data_default, label="data folder (one sub-folder per class)")
                with gr.Row():
                    start = gr.Button("Start distillation", variant="primary", elem_id="distil-start")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="distil-cancel")
                k_status = gr.Markdown(elem_id="distil-status")
                k_plot = gr.Plot(label="training curves")
                k_result = gr.Textbox(label="finished student", interactive=False, elem_id="distil-result")
                with gr.Row():
                    to_diag = gr.Button("Load into Diagnose as the student")
                    zip_btn = gr.Button("Download as zip")
                    k_zip = gr.File(label="model folder (zip)", interactive=False)
                run_inputs = [k_teacher, k_arch, k_size, k_epochs, k_images, *[weights[k] for k in
                              ("ce", "kd", "feat", "sem", "rel")], k_temp, k_map, k_feat, k_data]
                run_evt = start.click(on_submit, None, cancel, queue=False, api_name=False).then(
                    on_distil, run_inputs, [k_status, k_plot, k_result], api_name="distil", concurrency_limit=1,
                    concurrency_id="distil")
                run_evt.then(lambda: gr.Button("Cancel", interactive=True), None, cancel, api_name=False)
                cancel.click(on_cancel, None, cancel, api_name="cancel_distil", show_progress="hidden")
                zip_btn.click(on_zip, k_result, k_zip, api_name="zip_model")

            with gr.Tab("Benchmark", id="benchmark"):
                with gr.Row():
                    b_models = gr.CheckboxGroup(choices(), value=["teacher", "student"], label="models")
                    b_data = gr.Textbox(data_default, label="labelled data folder (one sub-folder per class)")
                b_run = gr.Button("Benchmark", variant="primary")
                b_table = gr.Dataframe(label="results", interactive=False)
                b_f1 = gr.Plot()
                b_cm = gr.Plot()
                b_rel = gr.Plot()
                b_run.click(on_benchmark, [b_models, b_data], [b_table, b_f1, b_cm, b_rel], api_name="benchmark")

            with gr.Tab("Hub", id="hub"):
                gr.Markdown("Pull a model by repo id into the model list, or push one with a generated model card "
                            "(token from `HF_TOKEN` or typed here; it is not stored).")
                with gr.Row():
                    h_repo = gr.Textbox(label="repo id to pull (OWNER/NAME)")
                    h_rev = gr.Textbox(label="revision (optional)")
                    h_pull = gr.Button("Pull")
                h_pull_msg = gr.Markdown()
                with gr.Row():
                    h_model = gr.Dropdown(choices(), label="model to push", allow_custom_value=True)
                    h_target = gr.Textbox(label="push to (OWNER/NAME)")
                    h_token = gr.Textbox(label="token (optional)", type="password")
                    h_private = gr.Checkbox(label="private")
                    h_push = gr.Button("Push")
                h_push_msg = gr.Markdown()
                h_pull.click(on_pull, [h_repo, h_rev], h_pull_msg, api_name="pull")
                h_push.click(on_push, [h_model, h_target, h_token, h_private], h_push_msg, api_name="push")

        lists = [d_teacher, d_student, b_models, k_teacher, h_model, r_teacher]
        run_evt.then(refresh, None, lists, api_name=False)
        h_pull_msg.change(refresh, None, lists, api_name=False)
        to_diag.click(lambda name: gr.Dropdown(value=name) if name else gr.Dropdown(), k_result, d_student,
                      api_name=False)
        r_to_distil.click(lambda name: (gr.Dropdown(value=name), gr.Tabs(selected="distil")), r_pick,
                          [k_arch, tabs], api_name=False)
        demo.load(refresh, None, lists, api_name=False)
    return demo


def launch() -> None:
    """Serve the app (offline, bundled models) on ``GRADIO_SERVER_NAME:GRADIO_SERVER_PORT`` (127.0.0.1:7860)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo = build_demo()
    demo.queue(max_size=32, default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    launch()
