"""What the app does, without the UI: the model list, diagnosis with two models, ranking, evaluation, the runs.

Every function here takes and returns plain Python / numpy / torch values, so the Gradio callbacks in
:mod:`kdcore_app` only translate between widgets and these calls (and the same calls serve tests and the latency
benchmark).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import ImageDecodeError, ImageSource, open_image, square_resize, to_grey_array
from kdcore.errors import KDCoreError
from kdcore.explain import METHODS, explain
from kdcore.explain.render import map_scale, render_overlay
from kdcore.models import WEIGHTS, ModelInfo, count_params, load_model, resolve_model_path
from kdcore.paths import BUNDLED_MODELS, runs_dir

if TYPE_CHECKING:
    from kdcore.distill import RunConfig

log = logging.getLogger(__name__)
NOTICE = "Research use only. Not a medical device: not for diagnosis or any clinical decision."


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
        """``teacher``/``student`` refs (default: env ``KDCORE_TEACHER``/``KDCORE_STUDENT``, else the bundled ones)."""
        refs = {"teacher": teacher or os.environ.get("KDCORE_TEACHER") or "teacher",
                "student": student or os.environ.get("KDCORE_STUDENT") or "student"}
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


# --- distillation runs --------------------------------------------------------------------------------------------
class RunRegistry:
    """The app's distillation runs: each in a new folder under ``root`` (default :func:`kdcore.paths.runs_dir`),
    its student added to ``store`` when it is done.

    Per browser session it keeps the stop flag of the run in progress and the count of runs queued. Cancel never
    kills a run's task: it sets the flag, and the run ends itself with a ``stopped`` event in its own stream, so no
    late progress message can overwrite that status. Runs still queued are dropped when they reach the front.
    """

    #: The named starting point (:data:`kdcore.distill.PRESETS`) of every run; the options given override it.
    preset = "short"

    def __init__(self, store: ModelStore, root: str | os.PathLike | None = None) -> None:
        self.store = store
        self.root = Path(root) if root is not None else runs_dir()
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._queued: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()

    def defaults(self) -> RunConfig:
        """The :class:`~kdcore.distill.RunConfig` a run gets when no option is given."""
        from kdcore.distill import make_config

        return make_config(self.preset)

    def queued(self, session: str) -> None:
        """Count a run the session submitted; it waits in the queue until :meth:`run` starts it."""
        with self._lock:
            self._queued[session] += 1

    def cancel(self, session: str) -> bool:
        """Stop the session's running run and drop its queued ones; False when it has none."""
        with self._lock:
            stop = self._running.get(session)
            if stop is not None:
                stop.set()
            self._dropped[session] = self._queued[session]
            return stop is not None or self._queued[session] > 0

    def run(self, session: str, teacher: str, data: str, **options) -> Iterator[dict]:
        """Start the session's next queued run: distill the store's ``teacher`` on the labelled folder ``data``,
        the preset overridden by ``options`` (flat, as :func:`kdcore.distill.config_from_options` takes them).

        Yields ``{"event": "dropped"}`` alone when the run was cancelled while queued. Otherwise
        ``{"event": "start", "config": RunConfig, "out": Path}``, then :func:`kdcore.distill.run`'s events; the
        ``done`` event gains ``name``, the new student's name in the store.
        """
        from kdcore.distill import config_from_options, run

        stop = self._begin(session)
        if stop is None:
            yield {"event": "dropped"}
            return
        try:
            _check_data(data)
            cfg = config_from_options(self.preset, teacher=self.store.ref(teacher), **options)
            out = self.new_dir(cfg.student)
            yield {"event": "start", "config": cfg, "out": out}
            for ev in run(cfg, data, out, stop=stop):
                if ev["event"] == "done":
                    ev = ev | {"name": self.store.add(f"distilled/{out.name}", ev["best_dir"])}
                yield ev
        finally:
            with self._lock:
                self._running.pop(session, None)

    def new_dir(self, arch: str) -> Path:
        """A new, empty ``ROOT/<time>-<arch>`` folder (``-2``, ``-3``, ... when a run began in the same second)."""
        stem, k = f"{time.strftime('%Y%m%d-%H%M%S')}-{arch}", 1
        while True:
            out = self.root / (stem if k == 1 else f"{stem}-{k}")
            try:
                out.mkdir(parents=True)
                return out
            except FileExistsError:
                k += 1

    def _begin(self, session: str) -> threading.Event | None:
        """The starting run's stop flag, or None when it was cancelled while queued."""
        with self._lock:
            self._queued[session] = max(self._queued[session] - 1, 0)
            if self._dropped[session]:
                self._dropped[session] -= 1
                return None
            stop = self._running[session] = threading.Event()
            return stop


# --- diagnose -----------------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """One model's answer on one slice."""

    name: str
    arch: str
    class_names: list[str]
    probs: np.ndarray  # (K,)
    inference_ms: float
    params: int
    size_bytes: int
    pixels: np.ndarray  # (S, S) uint8: the model's view of the slice
    runtime: str = "pytorch"  # what computed probs: "onnxruntime" or "pytorch"
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (S, S) float32
    explain_ms: dict[str, float] = field(default_factory=dict)
    overlays: dict[str, np.ndarray] = field(default_factory=dict)  # method -> uint8 (H, W, 3), colour bar included

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

    @property
    def agree(self) -> bool:
        return self.teacher.label == self.student.label

    def agreement(self) -> str:
        """One plain sentence on whether teacher and student agree."""
        t, s = self.teacher, self.student
        if self.agree:
            return (f"Teacher and student agree: both predict **{t.label}** "
                    f"(teacher {t.confidence:.0%}, student {s.confidence:.0%}).")
        return (f"Teacher and student **disagree**: the teacher predicts **{t.label}** ({t.confidence:.0%}), "
                f"the student **{s.label}** ({s.confidence:.0%}).")


def predict(model: nn.Module, info: ModelInfo, pixels: np.ndarray, name: str,
            methods: tuple[str, ...] = tuple(METHODS), runner=None) -> Prediction:
    """Probabilities and explanation maps of one model for one decoded slice ``(S, S)`` uint8 at its own size.

    ``runner`` (e.g. :meth:`ModelStore.runner`) computes the probabilities when given; the maps always come from
    the PyTorch ``model``.
    """
    x = to_input(torch.tensor(pixels)[None], info.spec)  # (1, C, S, S)
    runner = model if runner is None else runner
    t0 = time.perf_counter()
    with torch.inference_mode():
        probs = runner(x).softmax(1)[0]
    ms = (time.perf_counter() - t0) * 1000
    target = int(probs.argmax())
    maps, explain_ms = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        maps[method] = explain(model, x, target, method=method)[0].detach().float().numpy()
        explain_ms[method] = (time.perf_counter() - t0) * 1000
    folder = Path(info.path) if info.path else None
    size = (folder / WEIGHTS).stat().st_size if folder and (folder / WEIGHTS).is_file() else 0
    return Prediction(name, info.arch, list(info.class_names), probs.numpy(), ms, count_params(model), size, pixels,
                      getattr(runner, "name", "pytorch"), maps, explain_ms)


def diagnose(image: ImageSource, store: ModelStore, teacher: str = "teacher", student: str = "student",
             methods: tuple[str, ...] = tuple(METHODS), display_size: int = 384) -> Diagnosis:
    """Decode ``image`` once, predict and explain it with both models, render the overlays.

    Overlays are drawn over the slice at its own aspect, longer side at most ``display_size``, with one colour
    scale per method shared by teacher and student.

    Raises :class:`KDCoreError` (one line) for an unreadable image, a missing model or mismatched classes.
    """
    t0 = time.perf_counter()
    (tm, ti), (sm, si) = store.get(teacher), store.get(student)
    if list(ti.class_names) != list(si.class_names):
        raise KDCoreError(f"{teacher} and {student} have different classes ({ti.class_names} vs {si.class_names})")
    try:
        grey = to_grey_array(open_image(image))
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
    shown = _display_image(grey, display_size)
    for method in methods:  # one colour scale per method, shared by teacher and student
        scale = map_scale([tp.maps[method], sp.maps[method]], method)
        for p in (tp, sp):
            p.overlays[method] = render_overlay(shown, p.maps[method], method, scale)
    return Diagnosis(tp, sp, time.perf_counter() - t0)


def _display_image(grey: np.ndarray, size: int) -> Image.Image:
    """The slice ``(H, W)`` in [0, 1] as an 8-bit greyscale image, its longer side at most ``size``."""
    img = Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L")
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    return img


# --- rank ---------------------------------------------------------------------------------------------------------
def rank_students(store: ModelStore, teacher: str, data: str, **options) -> list[dict]:
    """DisWOT ranking for the store's ``teacher`` model: :func:`kdcore.rank.diswot.rank_for_teacher` with its
    ``options`` (names, max_params, max_latency_ms, variant, batch_size, ...), holding the model's lock."""
    from kdcore.rank.diswot import rank_for_teacher

    _check_data(data)
    model, info = store.get(teacher)
    with store.lock(model):
        return rank_for_teacher(model, info.spec, info.class_names, data, **options)


# --- evaluate -----------------------------------------------------------------------------------------------------
def evaluate_models(store: ModelStore, names: list[str], data: str) -> list[dict]:
    """:func:`kdcore.engine.evaluate.evaluate` of each of the store's ``names`` on ``data``, each with its ``name``."""
    from kdcore.engine.evaluate import evaluate

    if not names:
        raise KDCoreError("Pick at least one model.")
    _check_data(data)
    return [{"name": n, **evaluate(str(store.folder(n)), data)} for n in names]


def _check_data(data: str) -> None:
    if not data:
        raise KDCoreError("Give the labelled data folder (one sub-folder per class).")
