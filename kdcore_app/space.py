"""Assemble a deployable Gradio Space folder from the installed ``kdcore`` and ``kdcore_app`` packages."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from kdcore.errors import KDCoreError
from kdcore.models import WEIGHTS, resolve_model_path
from kdcore.models.hub import MODEL_FILES, _repo_id
from kdcore_app.measured import REPORTS, RESULTS_DIR

ENTRY_POINT = '"""The Space\'s entry point: kdcore\'s Gradio app on the bundled models."""\n\n' \
              "from kdcore_app import launch\n\nlaunch()\n"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "space_template")


def _package_dir(name: str) -> Path:
    return Path(str(files(name)))


def _make_writable(folder: Path) -> None:
    """Give the owner write access throughout ``folder`` (a copy of a read-only installed package is the user's)."""
    for path in (folder, *folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def assemble_space(
    out_dir: str | os.PathLike,
    teacher: str = "teacher",
    student: str = "student",
    models: Sequence[str] = (),
) -> Path:
    """Write ``app.py``, the installed ``kdcore`` and ``kdcore_app`` packages (``teacher``/``student`` as the
    bundled models), the measured reports the Benchmark tab shows (``bench/results``, where this install has them),
    ``requirements.txt`` and the Space card (``models`` listed in its front matter if given)."""
    from huggingface_hub import SpaceCard

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise KDCoreError(f"{out}: exists and is not empty")
    sources = {name: resolve_model_path(ref) for name, ref in (("teacher", teacher), ("student", student))}
    for name, src in sources.items():
        if not (src / WEIGHTS).is_file():
            raise KDCoreError(f"{src}: no model to bundle as the Space's {name}")
    out.mkdir(parents=True, exist_ok=True)
    for package in ("kdcore", "kdcore_app"):
        shutil.copytree(_package_dir(package), out / package, ignore=_IGNORE, copy_function=shutil.copyfile)
    _make_writable(out)
    for name, src in sources.items():
        dest = out / "kdcore" / "bundled" / "models" / name
        if src.resolve() != dest.resolve():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for f in MODEL_FILES:
                if (src / f).is_file():
                    shutil.copyfile(src / f, dest / f)
    reports = out / "bench" / "results"
    for name in REPORTS.values():
        if (RESULTS_DIR / f"{name}.md").is_file():
            reports.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(RESULTS_DIR / f"{name}.md", reports / f"{name}.md")
    template = _package_dir("kdcore_app") / "space_template"
    (out / "app.py").write_text(ENTRY_POINT)
    shutil.copyfile(template / "requirements.txt", out / "requirements.txt")
    card = SpaceCard.load(template / "README.md")
    if models:
        card.data.models = [_repo_id(m) for m in models]
    card.save(out / "README.md")
    return out
