"""Where kdcore reads and writes: bundled resources (read-only package data) and the user cache (everything made).

The package directory is never written. Bundled files are found through :mod:`importlib.resources`, so they work
from a source checkout, an editable install and a wheel alike. Everything kdcore makes (decoded-image caches,
splits of user data, ONNX exports, teacher caches, the app's runs) goes under :func:`cache_dir`.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

#: Names of the bundled models, usable wherever a model is asked for.
#: ``student-tiny``: the smallest student (under 1% of the teacher's parameters).
BUNDLED_MODELS = ("teacher", "student", "student-tiny")


def bundled(*parts: str) -> Path:
    """A path inside the package's ``bundled/`` folder (models, samples, splits); read-only."""
    return Path(str(files("kdcore").joinpath("bundled", *parts)))


def bundled_model(name: str) -> Path:
    """The folder of bundled model ``name`` (one of :data:`BUNDLED_MODELS`)."""
    return bundled("models", name)


def samples_dir() -> Path:
    """The bundled sample slices (``<class>_<n>.jpg``)."""
    return bundled("samples")


def cache_dir() -> Path:
    """The user cache: ``$KDCORE_CACHE``, else ``$XDG_CACHE_HOME/kdcore``, else ``~/.cache/kdcore``."""
    if os.environ.get("KDCORE_CACHE"):
        return Path(os.environ["KDCORE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdcore"


def runs_dir() -> Path:
    """Where the app keeps its distillation runs: ``$KDCORE_RUNS``, else ``cache_dir()/runs``."""
    return Path(os.environ.get("KDCORE_RUNS") or cache_dir() / "runs")
