"""What the app does, without the UI: the model list, diagnosis with two models, ranking, evaluation, the runs.

Every function here takes and returns plain Python / numpy / torch values, so the Gradio callbacks in
:mod:`kdcore_app` only translate between widgets and these calls (and the same calls serve tests and the latency
benchmark).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.dataset import DEMO_DATA, resolve_data
from kdcore.data.imageio import ImageDecodeError, ImageSource, read_image, square_resize, to_grey_array
from kdcore.errors import KDCoreError
from kdcore.explain import METHODS, explain
from kdcore.explain.localise import sibling_box
from kdcore.explain.render import MAX_ALPHA, Box, draw_box, map_scale, render_overlay
from kdcore.models import WEIGHTS, ModelInfo, count_params, load_model, resolve_model_path
from kdcore.models.calibration import calibrated_probs
from kdcore.models.ood import OODCheck, check
from kdcore.paths import BUNDLED_MODELS, bundled, runs_dir

if TYPE_CHECKING:
    from kdcore.distill import RunConfig

log = logging.getLogger(__name__)
NOTICE = "Research use only. Not a medical device: not for diagnosis or any clinical decision."
OOD_WARNING = ("This does not look like a brain MRI slice of the kind the models were trained on: "
               "treat the predictions as untrustworthy.")


# --- models -------------------------------------------------------------------------------------------------------
class ModelStore:
    """The app's model list: display name -> model reference (folder, ``teacher``/``student``, ``hf-hub:...``).

    Loaded models are cached (a few, least recently used dropped first), keyed by folder and weights mtime, so a
    re-exported folder is reloaded. Thread-safe: callbacks of several sessions run at once.
    """

    def __init__(self, refs: dict[str, str] | None = None, cache_size: int = 6) -> None:
        self._refs: dict[str, str] = dict(refs or {})
        self._cache: OrderedDict[tuple, tuple[nn.Module, ModelInfo]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._model_locks: dict[int, threading.Lock] = {}
        self._runners: dict[int, object] = {}

    @classmethod
    def with_defaults(cls, teacher: str | None = None, student: str | None = None) -> ModelStore:
        """``teacher``/``student`` refs (default: env ``KDCORE_TEACHER``/``KDCORE_STUDENT``, else the bundled ones),
        and the bundled ``student-tiny``."""
        refs = {"teacher": teacher or os.environ.get("KDCORE_TEACHER") or "teacher",
                "student": student or os.environ.get("KDCORE_STUDENT") or "student", "student-tiny": "student-tiny"}
        return cls(refs)

    def lock(self, model: nn.Module) -> threading.Lock:
        """The lock a caller holds while it runs ``model``: explanations patch a model's modules for the duration
        of a call (canonizers, hooks), so two sessions must not run one cached model at the same time."""
        with self._lock:
            return self._model_locks.setdefault(id(model), threading.Lock())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._refs)

    def add(self, name: str, ref: str | os.PathLike) -> str:
        """Add (or replace) ``name``; returns the name."""
        with self._lock:
            self._refs[name] = str(ref)
        return name

    def ref(self, name: str) -> str:
        with self._lock:
            if name not in self._refs:
                raise KDCoreError(f"{name!r} is not in the model list")
            return self._refs[name]

    def folder(self, name: str) -> Path:
        return resolve_model_path(self.ref(name))

    def pull(self, repo_id: str, revision: str | None = None) -> tuple[str, Path]:
        """Download the Hub model ``repo_id`` (``OWNER/NAME`` or ``hf-hub:OWNER/NAME``) and add it under its repo
        id; returns that name and the local folder."""
        from kdcore.models.hub import pull_model

        folder = pull_model(repo_id, revision)
        return self.add(repo_id.removeprefix("hf-hub:").strip(), folder), folder

    def get(self, name: str) -> tuple[nn.Module, ModelInfo]:
        """The loaded model (eval mode, CPU) and its info."""
        folder = self.folder(name)
        weights = folder / WEIGHTS
        if not weights.is_file():
            hint = " (the bundled defaults are not there yet)" if self.ref(name) in BUNDLED_MODELS else ""
            raise KDCoreError(f"{name}: no model at {folder}{hint}")
        key = (str(folder), weights.stat().st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loaded = load_model(folder)
        with self._lock:
            self._cache[key] = loaded
            while len(self._cache) > self._cache_size:
                self._runners.pop(id(self._cache.popitem(last=False)[1][0]), None)
        return loaded

    def runner(self, name: str):
        """The fast predictor of ``name`` (:class:`kdcore.models.runtime.OnnxRunner`), or its PyTorch model when ONNX
        Runtime is not installed or cannot run this architecture."""
        model, info = self.get(name)
        with self._lock:
            if id(model) in self._runners:
                return self._runners[id(model)]
        try:
            from kdcore.models.runtime import onnx_runner

            run = onnx_runner(model, info.spec)
        except Exception as e:
            log.warning("%s: ONNX Runtime unavailable (%s); predicting with PyTorch", name, str(e).splitlines()[0])
            run = model
        with self._lock:
            self._runners[id(model)] = run
        return run


def zip_model(folder: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """``OUT_DIR/<name>.zip`` of a model folder's ``config.json``, ``model.safetensors`` and ``README.md``."""
    from kdcore.models.hub import MODEL_FILES

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise KDCoreError(f"{folder}: not a model folder")
    out = Path(out_dir) / f"{folder.parent.name if folder.name == 'best' else folder.name}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in MODEL_FILES:
            if (folder / f).is_file():
                z.write(folder / f, f"{out.stem}/{f}")
    return out


# --- data ---------------------------------------------------------------------------------------------------------
def data_note(ref: str | None) -> str:
    """One Markdown line saying which data set a tab uses, and what accuracy on the demo set does not mean."""
    ref = (ref or "").strip()
    if ref in ("", DEMO_DATA):
        images = list(bundled(DEMO_DATA).glob("*/*.png"))
        per_class = len(images) // len({p.parent for p in images})
        return (f"Data: **the bundled demo set** ({len(images)} slices from the validation side of the reference "
                f"split, {per_class} per class). It shows the workflow; accuracy measured on it is *not* the models' "
                "accuracy (see their model cards).")
    kind = "local data" if Path(ref).exists() else "Hub dataset"
    return f"Data: {kind} **{ref}**."


# --- distillation runs --------------------------------------------------------------------------------------------
#: A run's states; the last four are final.
RUN_STATES = ("queued", "running", "done", "stopped", "failed", "interrupted")
RUN_FILE = "app-run.json"  # a run's record in its folder


@dataclass
class Run:
    """One distillation run of the app, kept by the server (not by a browser session)."""

    id: str  # the folder name under the registry's root: ``<arch>-<size>px-<preset>-<loss terms>[-k]``
    out: Path
    config: RunConfig
    data: str  # the data reference as given
    status: str = "queued"
    events: list[dict] = field(default_factory=list)  # every event so far, for pages that attach later
    error: str | None = None
    result: dict | None = None  # the ``done`` event, without its history
    stop: threading.Event = field(default_factory=threading.Event)
    session: str = ""

    @property
    def final(self) -> bool:
        return self.status in RUN_STATES[2:]

    @property
    def resumable(self) -> bool:
        """Interrupted by a server restart, or stopped after a whole epoch was saved."""
        from kdcore.engine.checkpoint import has_checkpoint

        return self.status == "interrupted" or (self.status == "stopped" and has_checkpoint(self.out))

    def label(self) -> str:
        """``<id> · <status>``, for a run list."""
        return f"{self.id} · {self.status}"

    def save(self, status: str | None = None) -> None:
        """Write the run's record (with ``status`` instead of the current one when given)."""
        record = {"id": self.id, "status": status or self.status, "data": self.data, "config": self.config.to_dict(),
                  "error": self.error, "result": self.result}
        (self.out / RUN_FILE).write_text(json.dumps(record, indent=1, default=str))


class RunRegistry:
    """The app's distillation runs, one folder each under ``root`` (default :func:`kdcore.paths.runs_dir`).

    Runs belong to the server: each trains in its own thread, one at a time (a later one waits), and keeps its
    events, so any page (a reload, a second tab) can list the runs and :meth:`follow` one from its first event.
    Each run's record (``app-run.json``) is kept in its folder; a run a server restart cut short is listed as
    ``interrupted`` and can be resumed from its last whole epoch. A run that ends without a checkpoint leaves no
    folder behind. Cancel never kills a thread: it sets the run's stop flag and the run ends itself with a
    ``stopped`` event. Per browser session the registry also counts runs still queued in the app, dropped when
    they reach the front after a cancel.
    """

    #: The named starting point (:data:`kdcore.distill.PRESETS`) of every run; the options given override it.
    preset = "short"

    def __init__(self, store: ModelStore, root: str | os.PathLike | None = None,
                 reference: str = "student") -> None:
        self.store = store
        self.root = Path(root) if root is not None else runs_dir()
        self.reference = reference  # the model every result is compared with, besides the teacher
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._one_at_a_time = threading.Lock()
        self._runs: dict[str, Run] = {}
        self._queued: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._load()

    def defaults(self) -> RunConfig:
        """The :class:`~kdcore.distill.RunConfig` a run gets when no option is given."""
        from kdcore.distill import make_config

        return make_config(self.preset)

    def runs(self) -> list[Run]:
        """Every run, newest first."""
        with self._lock:
            return list(reversed(self._runs.values()))

    def get(self, run_id: str) -> Run:
        with self._lock:
            if run_id not in self._runs:
                raise KDCoreError(f"no run {run_id!r}")
            return self._runs[run_id]

    def live(self) -> Run | None:
        """The newest run still queued or running, if any."""
        return next((r for r in self.runs() if not r.final), None)

    def queued(self, session: str) -> None:
        """Count a run the session submitted; it waits in the app's queue until :meth:`run` starts it."""
        with self._lock:
            self._queued[session] += 1

    def cancel(self, session: str, run_id: str = "") -> bool:
        """Stop run ``run_id`` (default: the session's live runs) and drop the session's queued ones; False when
        there was nothing to stop or drop."""
        with self._lock:
            live = [r for r in self._targets(session, run_id) if not r.final]
            for r in live:
                r.stop.set()
            self._dropped[session] = self._queued[session]
            return bool(live) or self._queued[session] > 0

    def settle(self, session: str, run_id: str = "", timeout: float = 600.0) -> bool:
        """Wait until the runs :meth:`cancel` stops (same arguments) have ended; False if ``timeout`` s passed."""
        with self._changed:
            return self._changed.wait_for(
                lambda: all(r.final for r in self._targets(session, run_id) if r.stop.is_set()), timeout)

    def _targets(self, session: str, run_id: str) -> list[Run]:
        """Run ``run_id``, else the session's runs (call with the lock held)."""
        if run_id in self._runs:
            return [self._runs[run_id]]
        return [r for r in self._runs.values() if r.session == session]

    def run(self, session: str, teacher: str, data: str, **options) -> Iterator[dict]:
        """Start the session's next queued run and :meth:`follow` it: distill the store's ``teacher`` on ``data``
        (a reference for :func:`resolve_data`), the preset overridden by ``options`` (flat, as
        :func:`kdcore.distill.config_from_options` takes them).

        Yields ``{"event": "dropped"}`` alone when the run was cancelled while queued.
        """
        from kdcore.distill import config_from_options

        with self._lock:
            self._queued[session] = max(self._queued[session] - 1, 0)
            if self._dropped[session]:
                self._dropped[session] -= 1
                yield {"event": "dropped"}
                return
        cfg = config_from_options(self.preset, teacher=self.store.ref(teacher), **options)
        run = Run(self.new_dir(run_name(cfg, self.preset)).name, Path(), cfg, data or DEMO_DATA, session=session)
        run.out = self.root / run.id
        self._start(run, resume=False)
        yield from self._follow(run)

    def resume(self, session: str, run_id: str) -> Iterator[dict]:
        """Continue a stopped or interrupted run from its last whole epoch, then :meth:`follow` it."""
        run = self.get(run_id)
        if not run.resumable:
            raise KDCoreError(f"{run_id} is {run.status}: only a stopped or interrupted run with a saved epoch "
                              "can be resumed")
        with self._lock:
            run.status, run.events, run.error, run.session, run.stop = "queued", [], None, session, threading.Event()
        self._start(run, resume=True)
        yield from self._follow(run)

    def follow(self, run_id: str) -> Iterator[dict]:
        """The run's events from its first one, then live ones until it ends: ``start``, ``waiting`` (behind
        another run), :func:`kdcore.distill.run`'s events, ``compare`` (evaluating the references), and a last
        ``done`` (with ``name``, ``total_s`` and ``reference``: accuracies of the teacher and the reference model
        on the same validation images), ``stopped`` or ``interrupted``. A failed run raises its
        :class:`KDCoreError` after its events."""
        return self._follow(self.get(run_id))

    def _follow(self, run: Run) -> Iterator[dict]:
        i = 0
        while True:
            with self._changed:
                while i == len(run.events) and not run.final:
                    self._changed.wait()
                new, final = run.events[i:], run.final
            i += len(new)
            yield from new
            if final and i == len(run.events):
                break
        if run.status == "failed":
            raise KDCoreError(run.error or "the run failed")
        if not run.events:  # a run loaded from disk: its summary only
            yield run.result or {"event": run.status, "run": run.id}

    def new_dir(self, stem: str) -> Path:
        """A new, empty ``ROOT/<stem>`` folder (``-2``, ``-3``, ... for reruns of the same settings)."""
        k = 1
        while True:
            out = self.root / (stem if k == 1 else f"{stem}-{k}")
            try:
                out.mkdir(parents=True)
                return out
            except FileExistsError:
                k += 1

    def _start(self, run: Run, resume: bool) -> None:
        with self._lock:
            self._runs[run.id] = run
            self._runs[run.id] = self._runs.pop(run.id)  # newest last
        run.save()
        threading.Thread(target=self._work, args=(run, resume), name=f"run-{run.id}", daemon=True).start()

    def _emit(self, run: Run, event: dict, status: str | None = None) -> None:
        with self._changed:
            run.events.append(event)
            if status is not None:
                run.status = status
            self._changed.notify_all()

    def _work(self, run: Run, resume: bool) -> None:
        """The run's thread: wait for the one-at-a-time lock, train, compare, record; never raises."""
        from kdcore.distill import run as distill

        self._emit(run, {"event": "start", "config": run.config, "out": run.out, "run": run.id, "data": run.data})
        if self._one_at_a_time.locked():
            busy = next((r.id for r in self.runs() if r.status == "running"), "another run")
            self._emit(run, {"event": "waiting", "behind": busy})
        with self._one_at_a_time:
            t0, last = time.perf_counter(), {"event": "stopped", "epoch": 0, "step": 0}
            try:
                self._emit(run, {"event": "running"}, "running")
                run.save()
                data = resolve_data(run.data)
                for ev in [] if run.stop.is_set() else distill(run.config, data, run.out, resume=resume,
                                                               stop=run.stop):
                    if ev["event"] == "done":
                        self._emit(run, {"event": "compare"})
                        ev = ev | {"name": f"distilled/{run.id}", "total_s": time.perf_counter() - t0,
                                   "run": run.id, "reference": self._reference(run.config, data)}
                    if ev["event"] in ("done", "stopped"):
                        last = ev
                    else:
                        self._emit(run, ev)
            except Exception as e:  # a run's failure is its page's message, never the server's end
                if not isinstance(e, KDCoreError):
                    log.exception("run %s failed", run.id)
                last = {"event": "failed", "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
            self._finish(run, last)

    def _finish(self, run: Run, last: dict) -> None:
        """Record the run's end, then send its last event (a failure is the follower's error). A run with nothing
        to load or resume leaves no folder and no list entry."""
        from kdcore.engine.checkpoint import has_checkpoint

        status = last["event"]
        run.error = last.get("error")
        if status == "done":
            self.store.add(last["name"], last["last_dir"])
            run.result = {k: v for k, v in last.items() if k != "history"}
        if status == "done" or (status == "stopped" and has_checkpoint(run.out)):
            run.save(status)
        else:
            shutil.rmtree(run.out, ignore_errors=True)
            with self._lock:
                self._runs.pop(run.id, None)
        with self._changed:
            if status != "failed":
                run.events.append(last)
            run.status = status
            self._changed.notify_all()

    def _reference(self, cfg: RunConfig, data: str) -> dict[str, float]:
        """Validation accuracy of the teacher and of the reference model on the run's validation images."""
        from kdcore.data.dataset import load_records
        from kdcore.data.pack import ensure_split
        from kdcore.engine.evaluate import evaluate

        out = {}
        try:
            split = str(ensure_split(load_records(data))[1])
        except KDCoreError:  # a data pack: it holds its validation side, not the files
            return out
        for name, ref in (("teacher", cfg.teacher), (self.reference, self.store.ref(self.reference))):
            try:
                out[name] = evaluate(ref, data, latency_repeats=1, split=split)["accuracy"]
            except KDCoreError as e:
                log.warning("no %s accuracy for the comparison: %s", name, e)
        return out

    def _load(self) -> None:
        """The runs recorded under ``root``; one that was queued or running when the server stopped is
        ``interrupted``. Empty folders left by older versions are removed."""
        from kdcore.distill import RunConfig as Config

        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                continue
            try:
                rec = json.loads((folder / RUN_FILE).read_text())
            except (OSError, ValueError):
                continue
            run = Run(folder.name, folder, Config.from_dict(rec["config"]), rec["data"], rec["status"],
                      error=rec.get("error"), result=rec.get("result"))
            if not run.final:
                run.status = "interrupted"
                run.save()
            if run.status == "done" and run.result:
                self.store.add(f"distilled/{run.id}", run.result.get("last_dir", run.result["best_dir"]))
            self._runs[run.id] = run


def run_name(cfg: RunConfig, preset: str) -> str:
    """A run's readable name: ``<arch>-<size>px-<preset>-<loss terms>``, e.g. ``resnet10t_w20-64px-short-ce+kd``."""
    return f"{cfg.student}-{cfg.size}px-{preset}-{'+'.join(cfg.distill.weights)}"


# --- diagnose -----------------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """One model's answer on one slice."""

    name: str
    arch: str
    class_names: list[str]
    probs: np.ndarray  # (K,) calibrated (the model's fitted temperature)
    inference_ms: float
    params: int
    size_bytes: int
    pixels: np.ndarray  # (S, S) uint8: the model's view of the slice
    runtime: str = "pytorch"  # what computed probs: "onnxruntime" or "pytorch"
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (S, S) float32
    explain_ms: dict[str, float] = field(default_factory=dict)
    overlays: dict[str, np.ndarray] = field(default_factory=dict)  # method -> uint8 (H, W, 3), colour bar included
    ood: OODCheck | None = None  # None: the model has no fitted out-of-distribution check

    @property
    def flagged(self) -> bool:
        return self.ood is not None and self.ood.flagged

    @property
    def label(self) -> str:
        return self.class_names[int(self.probs.argmax())]

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


@dataclass
class Diagnosis:
    teacher: Prediction
    student: Prediction
    seconds: float  # wall time from file to all results
    shown: np.ndarray  # (H, W) uint8: the decoded slice as the overlays show it (longer side <= display size)
    notes: dict  # how the file was read: format, slice, slices, intensity (kdcore.data.imageio.DecodedImage)
    box: Box | None = None  # a tumour box to outline on the overlays (normalised to the slice)

    def render(self, opacity: float = MAX_ALPHA) -> None:
        """(Re)draw both models' overlays over :attr:`shown` at ``opacity``, one colour scale per method shared by
        teacher and student, with :attr:`box` outlined where there is one."""
        for method in self.teacher.maps:
            scale = map_scale([self.teacher.maps[method], self.student.maps[method]], method)
            for p in (self.teacher, self.student):
                overlay = render_overlay(Image.fromarray(self.shown), p.maps[method], method, scale, opacity)
                p.overlays[method] = draw_box(overlay, self.box) if self.box else overlay

    @property
    def agree(self) -> bool:
        return self.teacher.label == self.student.label

    def warning(self) -> str:
        """The out-of-distribution warning with one line of why per flagging model, or "" when none flags."""
        why = [f"{p.name}: {p.ood.why()}" for p in (self.teacher, self.student) if p.flagged]
        return f"⚠️ **{OOD_WARNING}**  \n<small>{'; '.join(why)}</small>" if why else ""

    def agreement(self, display: Callable[[str], str] = str) -> str:
        """One plain sentence on whether teacher and student agree (class ids shown through ``display``)."""
        t, s = self.teacher, self.student
        if self.agree:
            return (f"Teacher and student agree: both predict **{display(t.label)}** "
                    f"(teacher {t.confidence:.0%}, student {s.confidence:.0%}).")
        return (f"Teacher and student **disagree**: the teacher predicts **{display(t.label)}** "
                f"({t.confidence:.0%}), the student **{display(s.label)}** ({s.confidence:.0%}).")


def predict(model: nn.Module, info: ModelInfo, pixels: np.ndarray, name: str,
            methods: tuple[str, ...] = tuple(METHODS), runner=None) -> Prediction:
    """Calibrated probabilities, the OOD check and explanation maps of one model for one decoded slice ``(S, S)``
    uint8 at its own size.

    ``runner`` (e.g. :meth:`ModelStore.runner`) computes the logits when given; the maps and the OOD check's
    features always come from the PyTorch ``model``.
    """
    x = to_input(torch.tensor(pixels)[None], info.spec)  # (1, C, S, S)
    runner = model if runner is None else runner
    t0 = time.perf_counter()
    with torch.inference_mode():
        probs = calibrated_probs(runner(x), info)[0]
    ms = (time.perf_counter() - t0) * 1000
    ood = check(model, info, pixels)
    target = int(probs.argmax())
    maps, explain_ms = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        maps[method] = explain(model, x, target, method=method)[0].detach().float().numpy()
        explain_ms[method] = (time.perf_counter() - t0) * 1000
    folder = Path(info.path) if info.path else None
    size = (folder / WEIGHTS).stat().st_size if folder and (folder / WEIGHTS).is_file() else 0
    return Prediction(name, info.arch, list(info.class_names), probs.numpy(), ms, count_params(model), size, pixels,
                      getattr(runner, "name", "pytorch"), maps, explain_ms, ood=ood)


def diagnose(image: ImageSource, store: ModelStore, teacher: str = "teacher", student: str = "student",
             methods: tuple[str, ...] = tuple(METHODS), display_size: int = 384, slice_index: int | None = None,
             opacity: float = MAX_ALPHA, box: Box | None = None) -> Diagnosis:
    """Decode ``image`` once (a DICOM frame or NIfTI axial slice: ``slice_index``, default the middle one),
    predict (calibrated), check (out of distribution?) and explain it with both models, render the overlays.

    Overlays are drawn over the slice at its own aspect, longer side at most ``display_size``, with one colour
    scale per method shared by teacher and student (:meth:`Diagnosis.render`), and a tumour ``box`` outlined
    (default: the box file beside an image path, :func:`sibling_box`).

    Raises :class:`KDCoreError` (one line) for an unreadable image, a missing model or mismatched classes.
    """
    t0 = time.perf_counter()
    (tm, ti), (sm, si) = store.get(teacher), store.get(student)
    if list(ti.class_names) != list(si.class_names):
        raise KDCoreError(f"{teacher} and {student} have different classes ({ti.class_names} vs {si.class_names})")
    try:
        decoded_image = read_image(image, slice_index)
        grey = to_grey_array(decoded_image.image)
    except ImageDecodeError as e:
        msg = str(e)
        if isinstance(image, (str, os.PathLike)):  # show the file's name, not the server's temp path
            msg = msg.replace(os.fspath(image), Path(image).name)
        raise KDCoreError(msg) from None
    decoded = {size: square_resize(grey, size) for size in {ti.spec.size, si.spec.size}}
    with store.lock(tm):
        tp = predict(tm, ti, decoded[ti.spec.size], teacher, methods, store.runner(teacher))
    with store.lock(sm):
        sp = predict(sm, si, decoded[si.spec.size], student, methods, store.runner(student))
    d = Diagnosis(tp, sp, 0.0, np.asarray(_display_image(grey, display_size)), decoded_image.notes,
                  box or sibling_box(image))
    d.render(opacity)
    d.seconds = time.perf_counter() - t0
    return d


def _display_image(grey: np.ndarray, size: int) -> Image.Image:
    """The slice ``(H, W)`` in [0, 1] as an 8-bit greyscale image, its longer side at most ``size``."""
    img = Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L")
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    return img


# --- rank ---------------------------------------------------------------------------------------------------------
def rank_students(store: ModelStore, teacher: str, data: str, **options) -> list[dict]:
    """Training-free ranking for the store's ``teacher`` model on ``data`` (a reference for :func:`resolve_data`):
    :func:`kdcore.rank.proxies.rank_for_teacher` with its ``options`` (names, max_params, max_latency_ms, proxy,
    batch_size, progress, ...), holding the model's lock."""
    from kdcore.rank.proxies import rank_for_teacher

    model, info = store.get(teacher)
    with store.lock(model):
        return rank_for_teacher(model, info.spec, info.class_names, resolve_data(data), **options)


# --- evaluate -----------------------------------------------------------------------------------------------------
def evaluate_models(store: ModelStore, names: list[str], data: str,
                    progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """:func:`kdcore.engine.evaluate.evaluate` of each of the store's ``names`` on ``data`` (a reference for
    :func:`resolve_data`), each with its ``name``; ``progress(fraction, what)`` per model and inference batch."""
    from kdcore.engine.evaluate import evaluate

    if not names:
        raise KDCoreError("Pick at least one model.")
    results = []
    for k, name in enumerate(names):
        def batch_done(done: int, total: int, k: int = k, name: str = name) -> None:
            if progress:
                progress((k + done / max(total, 1)) / len(names), f"{name}: {done}/{total} images")

        if progress:
            progress(k / len(names), f"{name}: loading, decoding")
        results.append({"name": name, **evaluate(str(store.folder(name)), resolve_data(data), progress=batch_done)})
    return results
