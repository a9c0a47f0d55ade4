"""kdcore.service without the UI: data references and the app's distillation runs (queue, cancel, folders, names,
re-attaching, interrupted runs, the finished student)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import kdcore.distill
from kdcore.data.dataset import load_records
from kdcore.errors import KDCoreError
from kdcore.paths import bundled
from kdcore.service import RUN_FILE, ModelStore, RunRegistry, data_note, resolve_data


def fake_run(cfg, data, out, resume: bool = False, stop: threading.Event | None = None, **_):
    """``kdcore.distill.run``'s event stream without training: ``done`` at once for 1 epoch, else steps until
    stopped (a checkpoint saved after the first when ``cfg.train.epochs == 3``); an unknown arch fails."""
    if cfg.student == "no_such_net":
        raise KDCoreError("unknown architecture 'no_such_net'")
    if cfg.train.epochs == 1:
        yield {"event": "done", "best_dir": str(out / "best"), "last_dir": str(out / "last"),
               "best": {"accuracy": 0.5}, "resumed": resume}
        return
    while not stop.is_set():
        yield {"event": "step"}
        if cfg.train.epochs == 3:
            (out / "checkpoint.safetensors").write_bytes(b"x")
            (out / "checkpoint.json").write_text("{}")
        time.sleep(0.01)
    yield {"event": "stopped", "epoch": 0, "step": 1}


@pytest.fixture
def registry(tmp_path, monkeypatch) -> RunRegistry:
    monkeypatch.setattr(kdcore.distill, "run", fake_run)
    monkeypatch.setattr(RunRegistry, "_reference", lambda self, cfg, data: {"teacher": 0.9, "student": 0.8})
    return RunRegistry(ModelStore({"teacher": str(tmp_path / "teacher"), "student": "student"}), tmp_path / "runs")


def start(registry: RunRegistry, session: str, epochs: int = 5, **options):
    """Submit and start a run; returns its ``start`` event and the rest of its stream."""
    registry.queued(session)
    events = registry.run(session, "teacher", "", epochs=epochs, **options)
    return next(events), events


def test_data_references_default_to_the_bundled_demo_set(tmp_path):
    assert resolve_data("") == resolve_data("demo") == str(bundled("demo"))
    assert resolve_data(str(tmp_path)) == str(tmp_path) and resolve_data("owner/set") == "owner/set"
    assert "not* the models' accuracy" in data_note("") and "Hub dataset" in data_note("owner/set")
    assert sorted(p.name for p in bundled("demo").iterdir() if p.is_dir()) == [
        "glioma", "meningioma", "notumor", "pituitary"]
    assert "(16 slices" in data_note("demo") and "4 per class" in data_note("demo")
    records = load_records("demo")  # the library, and so the CLI, take the same reference as the app
    assert len(records.sources) == 16 and np.bincount(records.labels).tolist() == [4] * 4
    assert sum(f.stat().st_size for f in bundled("demo").rglob("*")) <= 1_000_000


def test_a_run_has_a_readable_name_its_folder_and_an_honest_result(registry, tmp_path):
    first, events = start(registry, "s", epochs=1, loss={"ce": 1.0, "kd": 1.0})
    cfg = first["config"]
    assert first["event"] == "start" and first["run"] == f"{cfg.student}-{cfg.size}px-short-ce+kd"
    assert first["out"] == tmp_path / "runs" / first["run"] and first["data"] == "demo"
    assert cfg.teacher == str(tmp_path / "teacher") and cfg.train.epochs == 1
    rest = list(events)
    done = rest[-1]
    assert [e["event"] for e in rest] == ["running", "compare", "done"]
    assert done["name"] == f"distilled/{first['run']}" and done["name"] in registry.store.names()
    assert registry.store.ref(done["name"]) == str(first["out"] / "last")
    assert done["total_s"] >= 0 and done["reference"] == {"teacher": 0.9, "student": 0.8}
    assert json.loads((first["out"] / RUN_FILE).read_text())["status"] == "done"
    again, _ = start(registry, "s", epochs=1, loss={"ce": 1.0, "kd": 1.0})  # a rerun gets a suffix
    assert again["run"] == first["run"] + "-2"


def test_another_page_reattaches_to_a_live_run_and_cancels_it(registry):
    first, events = start(registry, "tab-1")
    assert next(events)["event"] == "running"
    live = registry.live()
    assert live.id == first["run"] and live.status == "running"
    follower = registry.follow(live.id)  # a reload: a new session follows from the first event
    assert next(follower)["event"] == "start" and next(follower)["event"] == "running"
    assert next(follower)["event"] == "step"
    assert registry.cancel("tab-2", live.id)  # the new page cancels by the run's id
    assert [e["event"] for e in follower][-1] == "stopped"
    assert [e["event"] for e in events][-1] == "stopped"
    assert not first["out"].exists() and registry.runs() == []  # no checkpoint: no folder, no entry


def test_cancel_stops_the_running_run_and_drops_queued_ones_only(registry):
    assert not registry.cancel("s")  # nothing to cancel: the next run is not pre-cancelled
    _, running = start(registry, "s")
    registry.queued("s")  # a second click waits behind the first
    assert registry.cancel("s")
    assert registry.settle("s", timeout=120)  # what the Cancel button waits for before it re-arms
    assert registry.runs() == [] or all(r.final for r in registry.runs())
    assert [e["event"] for e in running][-1] == "stopped"  # the run ends itself
    assert next(registry.run("s", "teacher", ""))["event"] == "dropped"  # dropped at the front
    for session in ("s", "other"):  # a later run is not, nor another session's
        first, events = start(registry, session)
        assert first["event"] == "start"
        registry.cancel(session)
        list(events)


def test_a_stopped_run_with_a_saved_epoch_is_kept_and_resumes(registry):
    first, events = start(registry, "s", epochs=3)
    assert [next(events)["event"] for _ in range(2)] == ["running", "step"]
    registry.cancel("s")
    list(events)
    run = registry.get(first["run"])
    assert run.status == "stopped" and run.resumable and first["out"].is_dir()
    resumed = registry.resume("s2", run.id)
    assert next(resumed)["event"] == "start"
    registry.cancel("s2", run.id)
    assert [e["event"] for e in resumed][-1] == "stopped"


def test_a_server_restart_shows_runs_as_interrupted_and_they_resume(registry, tmp_path):
    first, events = start(registry, "s", epochs=1)
    list(events)
    dead = tmp_path / "runs" / "cut-short"  # a run the server was training when it died
    dead.mkdir()
    (dead / RUN_FILE).write_text(json.dumps({"id": dead.name, "status": "running", "data": "demo",
                                             "config": registry.defaults().to_dict()}))
    (tmp_path / "runs" / "left-empty").mkdir()
    restarted = RunRegistry(registry.store, tmp_path / "runs")
    runs = {r.id: r for r in restarted.runs()}
    assert set(runs) == {first["run"], "cut-short"} and not (tmp_path / "runs" / "left-empty").exists()
    assert runs["cut-short"].status == "interrupted" and runs["cut-short"].resumable
    assert runs[first["run"]].status == "done" and f"distilled/{first['run']}" in restarted.store.names()
    assert list(restarted.follow(first["run"]))[-1]["name"] == f"distilled/{first['run']}"
    resumed = restarted.resume("s", "cut-short")
    assert next(resumed)["event"] == "start"
    restarted.cancel("s", "cut-short")
    assert [e["event"] for e in resumed][-1] == "stopped"


def test_a_failed_run_raises_its_error_and_leaves_nothing(registry, tmp_path):
    registry.queued("s")
    with pytest.raises(KDCoreError, match="unknown architecture"):
        list(registry.run("s", "teacher", "", student="no_such_net"))
    assert not registry.cancel("s") and registry.runs() == []
    assert not any((tmp_path / "runs").iterdir())


def test_runs_default_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("KDCORE_RUNS", raising=False)
    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path))
    assert RunRegistry(ModelStore()).root == tmp_path / "runs"


def test_a_hub_dataset_id_is_data_for_every_tab(tiny_model_dir, tmp_path, monkeypatch):
    """``OWNER/NAME`` loads through ``datasets`` (here from the loopback Hub), then again offline from its cache."""
    import io

    import datasets
    import numpy as np
    from huggingface_hub import HfApi
    from PIL import Image

    from kdcore.data.pack import load_train_data
    from kdcore.service import rank_students
    from tests.helpers import CLASSES, synthetic_slice
    from tests.hub_server import HubServer, use_hub

    rng = np.random.default_rng(0)
    images, labels = [], []
    for k in range(len(CLASSES)):
        for _ in range(8):
            buf = io.BytesIO()
            Image.fromarray(synthetic_slice(k, rng, 40)).save(buf, "PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
            labels.append(k)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
        tmp_path / "train.parquet")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    with HubServer() as hub:
        use_hub(monkeypatch, hub.url, str(tmp_path / "hub"))
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
        api = HfApi(endpoint=hub.url, token="hf_test")
        api.create_repo("owner/mri", repo_type="dataset")
        api.upload_file(path_or_fileobj=tmp_path / "train.parquet", path_in_repo="data/train-00000-of-00001.parquet",
                        repo_id="owner/mri", repo_type="dataset")
        rows = rank_students(ModelStore({"teacher": str(tiny_model_dir)}), "teacher", "owner/mri",
                             names=["test_resnet"], batch_size=8)
    assert [r["name"] for r in rows] == ["test_resnet"]
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # the Hub is gone: the datasets cache answers
    data = load_train_data(resolve_data("owner/mri"), 32)
    assert len(data.train) + len(data.val) == 32 and data.class_names == CLASSES


def test_diagnose_outlines_the_box_file_beside_an_image(tmp_path):
    import shutil

    from kdcore.explain.localise import sibling_box
    from kdcore.paths import samples_dir
    from kdcore.service import diagnose

    image = tmp_path / "slice.jpg"
    shutil.copyfile(sorted(samples_dir().glob("*.jpg"))[0], image)
    store = ModelStore.with_defaults()
    plain = diagnose(image, store, methods=("gradcam",))
    assert plain.box is None and sibling_box(image) is None
    (tmp_path / "slice.txt").write_text("0.5 0.5 0.5 0.5\n")
    boxed = diagnose(image, store, methods=("gradcam",))
    assert boxed.box == (0.5, 0.5, 0.5, 0.5)
    h, w = boxed.shown.shape
    edge = boxed.teacher.overlays["gradcam"][h // 2, w // 4]
    assert tuple(edge) == (0, 255, 0) and tuple(plain.teacher.overlays["gradcam"][h // 2, w // 4]) != (0, 255, 0)
    (tmp_path / "slice.txt").write_text("notes about this slice\n")  # not a box: ignored, not an error
    assert diagnose(image, store, methods=("gradcam",)).box is None
