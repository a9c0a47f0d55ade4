"""Hub pull/push, all offline: a pre-populated HF cache with HF_HUB_OFFLINE, and a loopback Hub-compatible server."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import timm
import torch

from kdcore.errors import KDCoreError
from kdcore.models import load_model, save_model
from kdcore.models.hub import pull_model, push_model, push_space
from kdcore_app.space import assemble_space
from tests.helpers import REPO
from tests.hub_server import HubServer, use_hub

SHA = "a" * 40


def _populate_cache(cache: Path, repo_id: str, model_dir: Path) -> Path:
    """The layout snapshot_download leaves: ``models--OWNER--NAME/{refs/main, snapshots/<sha>/...}``."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SHA)
    shutil.copytree(model_dir, root / "snapshots" / SHA)
    return root / "snapshots" / SHA


def test_pull_offline_from_cache(tiny_model_dir, tmp_path, monkeypatch, capsys):
    use_hub(monkeypatch, None, str(tmp_path / "hub"), offline=True)
    snap = _populate_cache(tmp_path / "hub", "owner/tiny", tiny_model_dir)
    assert pull_model("owner/tiny") == snap
    model, info = load_model("hf-hub:owner/tiny")
    ref, _ = load_model(tiny_model_dir)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model(x), ref(x))
    assert info.class_names == ["glioma", "meningioma", "notumor", "pituitary"]
    from kdcore.cli import main

    assert main(["pull", "owner/tiny"]) == 0 and str(snap) in capsys.readouterr().out
    assert main(["pull", "owner/absent"]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "Traceback" not in err
    with pytest.raises(KDCoreError, match="OWNER/NAME"):
        pull_model("not-a-repo-id")


def test_push_roundtrip_loopback_hub(tiny_model_dir, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    model, info = load_model(tiny_model_dir)
    info.summary = {"val_metrics": {"accuracy": 0.9, "macro_f1": 0.88}, "epochs": 3, "teacher": "teacher"}
    tiny_model_dir = save_model(model, tmp_path / "trained", info)
    with HubServer() as hub:
        use_hub(monkeypatch, hub.url, str(tmp_path / "hub"))
        url = push_model(tiny_model_dir, "owner/tiny-student", token="hf_test")
        assert url.endswith("/owner/tiny-student")
        files = hub.repos[("model", "owner/tiny-student")].files
        assert sorted(files) == ["README.md", "config.json", "model.safetensors"]  # safetensors only, no pickle
        # pushing again (an update) works: exist_ok
        push_model(tiny_model_dir, "owner/tiny-student", token="hf_test")

        loaded = timm.create_model("hf-hub:owner/tiny-student", pretrained=True).eval()
        ref, _ = load_model(tiny_model_dir)
        x = torch.randn(3, 1, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), ref(x))

        card = ModelCard.load(pull_model("owner/tiny-student") / "README.md")
        assert card.data.library_name == "timm"
        assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"accuracy": 0.9, "macro_f1": 0.88}
        assert "Intended use" in card.text and "Limitations" in card.text
        assert 'hf-hub:owner/tiny-student' in card.text

        with pytest.raises(KDCoreError, match="repo not found"):
            pull_model("owner/missing")


def test_space_assemble_and_push(tiny_model_dir, tmp_path, monkeypatch):
    out = assemble_space(tmp_path / "space", teacher=str(tiny_model_dir), student=str(tiny_model_dir),
                         models=["owner/t", "owner/s"])
    assert (out / "app.py").is_file() and (out / "kdcore" / "models" / "folder.py").is_file()
    assert (out / "kdcore_app" / "demo.py").is_file()
    bundled_teacher = out / "kdcore" / "bundled" / "models" / "teacher"
    assert (bundled_teacher / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("__pycache__"))
    assert not (out / "kdcore_app" / "space_template").exists()
    from kdcore_app.measured import REPORTS, RESULTS_DIR

    for name in REPORTS.values():  # the Benchmark tab's measured figures travel with the Space
        assert (out / "bench" / "results" / f"{name}.md").read_text() == (RESULTS_DIR / f"{name}.md").read_text()
    from huggingface_hub import SpaceCard

    assert SpaceCard.load(out / "README.md").data.models == ["owner/t", "owner/s"]
    with pytest.raises(KDCoreError, match="not empty"):
        assemble_space(out, teacher=str(tiny_model_dir), student=str(tiny_model_dir))
    with HubServer() as hub:
        use_hub(monkeypatch, hub.url, str(tmp_path / "hub"))
        url = push_space(out, "owner/demo", token="hf_test")
        assert "spaces/owner/demo" in url
        repo = hub.repos[("space", "owner/demo")]
        assert repo.sdk == "gradio" and "app.py" in repo.files
        assert "kdcore/bundled/models/student/config.json" in repo.files


def test_space_from_a_read_only_install_is_writable(tiny_model_dir, tmp_path, monkeypatch):
    from kdcore_app import space

    installed = tmp_path / "site"
    skip = shutil.ignore_patterns("__pycache__", "*.safetensors")  # the Space bundles the tiny model instead
    for package in ("kdcore", "kdcore_app"):
        shutil.copytree(REPO / package, installed / package, ignore=skip)
    for p in installed.rglob("*"):
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    monkeypatch.setattr(space, "_package_dir", lambda name: installed / name)
    try:
        out = assemble_space(tmp_path / "space", teacher=str(tiny_model_dir), student=str(tiny_model_dir))
    finally:
        for p in installed.rglob("*"):
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert all(p.stat().st_mode & stat.S_IWUSR for p in out.rglob("*"))
    assert (out / "kdcore" / "bundled" / "models" / "teacher" / "model.safetensors").is_file()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("-", "_")] = version.strip()
    return pins


def test_space_card_matches_pins():
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(REPO / "kdcore_app" / "space_template" / "README.md").data
    root = _pins(REPO / "requirements.txt")
    assert card.sdk == "gradio" and card.app_file == "app.py"
    assert card.sdk_version == root["gradio"]
    assert card.python_version == "3.11"
    assert card.license and card.tags and card.models is not None
    space = _pins(REPO / "kdcore_app" / "space_template" / "requirements.txt")
    assert "gradio" not in space  # the Space gets gradio from sdk_version
    for name, version in space.items():
        if name in root:
            assert version == root[name], name
    import huggingface_hub

    assert space["huggingface_hub"] == huggingface_hub.__version__


@pytest.mark.hub
@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="needs HF_TOKEN (live Hugging Face Hub)")
def test_live_push_pull(tiny_model_dir):
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = f"{api.whoami()['name']}/kdcore-ci-tiny"
    push_model(tiny_model_dir, repo_id, private=True)
    try:
        model = timm.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
        ref, _ = load_model(tiny_model_dir)
        x = torch.randn(1, 1, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x))
    finally:
        api.delete_repo(repo_id)
