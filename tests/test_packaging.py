"""The built wheel: its package data, its ``kdcore`` script, and runs from any folder that never write into it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import CLASSES, REPO, make_dataset

pytestmark = pytest.mark.slow

PACKAGES = ("kdcore", "kdcore_app")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (offline) from a copy of the source, so that no build folder lands in the checkout."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy2(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=120)
    return next(out.glob("kdcore-*.whl"))


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed with ``pip install --target``: ``site/{kdcore,kdcore_app,bin/kdcore}``."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    return target


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _set_writable(root: Path, writable: bool) -> None:
    for p in (root, *root.rglob("*")):
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _linked_data(root: Path) -> Path:
    """``root/linked/<class>/``: symbolic links to images stored elsewhere (one class folder is itself a link)."""
    store = make_dataset(root / "store", per_class=6)
    linked = root / "linked"
    for name in CLASSES[1:]:
        (linked / name).mkdir(parents=True)
        for f in (store / name).iterdir():
            (linked / name / f"link-{f.name}").symlink_to(f)
    (linked / CLASSES[0]).symlink_to(store / CLASSES[0], target_is_directory=True)
    return linked


def test_wheel_holds_the_bundled_data_the_script_and_the_requirements(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped = [p for package in PACKAGES for folder in ("bundled", "space_template")
               for p in (REPO / package / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert shipped and {p.relative_to(REPO).as_posix() for p in shipped} <= names
    assert "kdcore = kdcore.cli:main" in scripts
    pins = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requires = {line.removeprefix("Requires-Dist: ") for line in meta.splitlines() if line.startswith("Requires-Dist:")}
    assert requires == {p for p in pins if p}
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_wheel_runs_anywhere_and_never_writes_into_itself(site, tmp_path):
    data, cache, work = _linked_data(tmp_path), tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "KDCORE_CACHE": str(cache), "PYTHONDONTWRITEBYTECODE": "1",
           "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> None:
        res = subprocess.run(list(args), check=False, cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr

    script = str(site / "bin" / "kdcore")
    for package in PACKAGES:
        _set_writable(site / package, False)
    before = {package: _tree(site / package) for package in PACKAGES}
    try:
        run(sys.executable, "-m", "kdcore", "evaluate", "--model", "student", "--data", str(data),
                  "--json", "eval.json")
        result = json.loads((work / "eval.json").read_text())
        assert Path(result["model"]).is_relative_to(site)  # the installed package, not the checkout
        assert result["num_images"] == 24 and set(result["per_class"]) == set(CLASSES)
        assert not (cache / "splits").exists()  # evaluating needs no split and writes none
        run(script, "rank", "--teacher", "student", "--data", str(data), "--batch-size", "8",
            "--candidates", "test_resnet", "--json", "rank.json")
        assert [r["name"] for r in json.loads((work / "rank.json").read_text())] == ["test_resnet"]
        splits = list((cache / "splits").iterdir())  # the user's data gets its split in the user cache
        assert len(splits) == 1 and splits[0].name.startswith(f"{tmp_path.name}-linked-")
        split = json.loads(splits[0].read_text())
        assert all(i.startswith(f"{CLASSES[0]}/") or "/link-" in i for i in split["train"] + split["val"])
        run(script, "space", "--out", "space")
        space = work / "space"
        assert {"app.py", "README.md", "requirements.txt", "kdcore", "kdcore_app"} <= {p.name for p in space.iterdir()}
        assert (space / "kdcore" / "bundled" / "models" / "student" / "model.safetensors").is_file()
        assert not (space / "kdcore_app" / "space_template").exists()
        after = {package: _tree(site / package) for package in PACKAGES}
    finally:
        for package in PACKAGES:
            _set_writable(site / package, True)
    assert after == before
