"""The app through gradio_client, launched on loopback with tiny models: every tab's functions and the bad inputs."""

from __future__ import annotations

import struct
import time
import zlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLASSES, synthetic_slice
from hub_server import HubServer, use_hub

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` (no real pixel data): a 20000x20000 upload without 400 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(1)
    grey = synthetic_slice(0, rng, 96)
    Image.fromarray(grey).save(d / "slice.jpg", quality=95)
    jpeg = (d / "slice.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "empty.jpg").write_bytes(b"")
    (d / "huge.png").write_bytes(_png_header_only(20000, 20000))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 200)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(d / "sixteen.png")
    assert Image.open(d / "sixteen.png").mode.startswith("I")
    return {p.stem: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def app(tiny_model_dir, tiny_data, tmp_path_factory):
    """The app on 127.0.0.1 (random port): teacher = tiny 32 px test_resnet, student = a 48 px one."""
    from kdcore_app import build_demo
    from kdcore.data.imageio import InputSpec
    from kdcore.models import ModelInfo, create_model, save_model

    tmp = tmp_path_factory.mktemp("app")
    torch.manual_seed(1)
    spec = InputSpec(size=48)
    student = save_model(create_model("test_resnet", 4, spec), tmp / "student48",
                         ModelInfo("test_resnet", CLASSES, spec))
    samples = tmp / "samples"
    samples.mkdir()
    Image.fromarray(synthetic_slice(3, np.random.default_rng(2), 64)).save(samples / "pituitary.jpg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDCORE_CACHE", str(tmp / "cache"))
        demo = build_demo(str(tiny_model_dir), str(student), samples, str(tiny_data), tmp / "runs")
        demo.queue(default_concurrency_limit=2)
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
        try:
            yield {"url": url, "demo": demo, "tmp": tmp, "samples": samples}
        finally:
            demo.close()


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app["url"], verbose=False)


def _diagnose(client: Client, path: Path, teacher: str = "teacher", student: str = "student"):
    return client.predict(handle_file(str(path)), teacher, student, api_name="/diagnose")


def test_diagnose_both_models_and_heatmaps(client, files):
    t_probs, t_info, s_probs, s_info, agreement, gallery = _diagnose(client, files["slice"])
    gallery = [(g["image"], g["caption"]) for g in gallery]
    assert {c["label"] for c in t_probs["confidences"]} == set(CLASSES)
    assert t_probs["label"] in CLASSES and s_probs["label"] in CLASSES
    assert "inference" in t_info and "params" in t_info and "MiB" in s_info
    assert ("agree" in agreement) and "all results in" in agreement
    assert [c for _, c in gallery] == ["teacher · LRP", "teacher · Grad-CAM", "student · LRP", "student · Grad-CAM"]
    for item in gallery:  # four RGB overlays at the upload's aspect, colour bar drawn in
        img = np.asarray(Image.open(item[0]))
        assert img.shape == (96, 96, 3) and img.std() > 0


def test_concurrent_sessions_get_their_own_results(app, files, tmp_path):
    """Two browser sessions diagnose different uploads at the same time: each gets its own overlays back."""
    other = tmp_path / "other.png"
    Image.fromarray(synthetic_slice(3, np.random.default_rng(5), 72)).save(other)
    a, b = Client(app["url"], verbose=False), Client(app["url"], verbose=False)
    jobs = [(c.submit(handle_file(str(p)), "teacher", "student", api_name="/diagnose"), size)
            for c, p, size in ((a, files["slice"], 96), (b, other, 72))]
    for job, size in jobs:
        gallery = job.result(timeout=120)[5]
        assert {np.asarray(Image.open(g["image"])).shape for g in gallery} == {(size, size, 3)}


@pytest.mark.parametrize("name", ["rgba", "sixteen"])
def test_unusual_but_valid_pngs_work(client, files, name):
    t_probs, *_ = _diagnose(client, files[name])
    assert t_probs["label"] in CLASSES


@pytest.mark.parametrize("name, message", [
    ("text", "not a readable image"), ("truncated", "truncated"), ("empty", "empty"), ("huge", "larger than"),
])
def test_bad_uploads_give_one_line_errors_and_app_keeps_working(client, files, name, message):
    with pytest.raises(AppError, match=message) as e:
        _diagnose(client, files[name])
    assert "Traceback" not in str(e.value) and "/tmp/gradio" not in str(e.value)
    assert _diagnose(client, files["slice"])[0]["label"] in CLASSES


def test_no_upload_and_unknown_model(client, files):
    with pytest.raises(AppError, match="Upload an MRI slice"):
        client.predict(None, "teacher", "student", api_name="/diagnose")
    with pytest.raises(AppError, match="not in the model list"):
        _diagnose(client, files["slice"], student="nope")


def test_benchmark(client, tiny_data):
    table, f1, cm, rel = client.predict(["teacher", "student"], str(tiny_data), api_name="/benchmark")
    assert [r[0] for r in table["data"]] == ["teacher", "student"]
    assert "macro-F1" in table["headers"] and "F1 glioma" in table["headers"]
    with pytest.raises(AppError, match="no such|not a|No such|does not"):
        client.predict(["teacher"], str(tiny_data / "nope"), api_name="/benchmark")


def test_rank_students(client, tiny_data):
    table, plot, pick = client.predict("teacher", str(tiny_data), None, None, "original",
                                       "test_resnet, test_efficientnet", 8, api_name="/rank")
    assert sorted(r[1] for r in table["data"]) == ["test_efficientnet", "test_resnet"]
    assert table["headers"][:4] == ["rank", "candidate", "family", "score"]
    assert pick["value"] == table["data"][0][1]
    import json

    assert json.loads(plot["plot"])["data"][0]["type"] == "scatter"
    with pytest.raises(AppError, match="no candidate fits"):
        client.predict("teacher", str(tiny_data), 0.001, None, "original", "test_resnet", 8, api_name="/rank")


def _distill_args(data, epochs=1, images=16, arch="test_resnet", size=32, **w):
    weights = {"ce": 1.0, "kd": 1.0, "feat": 0.0, "sem": 0.0, "rel": 0.0} | w
    return ["teacher", arch, size, epochs, images, *weights.values(), 4.0, "lrp", "cosine", str(data)]


def test_distill_run_joins_model_list_zip_and_diagnose(app, client, tiny_data, files):
    status, plot, name = client.predict(*_distill_args(tiny_data, sem=1.0), api_name="/distill")
    assert status.startswith("Done") and name.startswith("distilled/")
    zpath = client.predict(name, api_name="/zip_model")
    assert sorted(Path(n).name for n in zipfile.ZipFile(zpath).namelist()) == [
        "README.md", "config.json", "model.safetensors"]
    assert _diagnose(client, files["slice"], student=name)[2]["label"] in CLASSES


def test_distill_failure_reports_and_app_keeps_serving(client, tiny_data, files):
    with pytest.raises(AppError, match="unknown architecture"):
        client.predict(*_distill_args(tiny_data, arch="no_such_net"), api_name="/distill")
    with pytest.raises(AppError, match="data folder"):
        client.predict(*_distill_args(""), api_name="/distill")
    assert _diagnose(client, files["slice"])[0]["label"] in CLASSES


def _wait_for(job, codes, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while job.status().code not in codes:
        assert time.time() < deadline and not job.done(), f"job {job.status().code}"
        time.sleep(0.1)


def test_distill_one_at_a_time_and_cancel(app, tiny_data):
    from gradio_client.utils import Status

    running = (Status.PROCESSING, Status.ITERATING)
    a, b = Client(app["url"], verbose=False), Client(app["url"], verbose=False)
    first = a.submit(*_distill_args(tiny_data, epochs=100), api_name="/distill")
    _wait_for(first, running)
    second = b.submit(*_distill_args(tiny_data, epochs=100), api_name="/distill")
    _wait_for(second, (Status.IN_QUEUE,))  # waits its turn: one run at a time per app
    assert second.status().queue_size is not None
    a.predict(api_name="/cancel_distill")
    _wait_for(second, running)  # the queued run starts once the first has stopped itself
    deadline = time.time() + 30  # the first job's client-side future may lag the server by a poll
    while not first.done():
        assert time.time() < deadline, "the cancelled run never ended"
        time.sleep(0.1)
    assert first.result(timeout=30)[0].startswith("Cancelled at epoch")  # the run's own last message
    # (its final output: outputs() may lack a message yielded just before the end, which arrives as the result)
    b.predict(api_name="/cancel_distill")
    assert second.result(timeout=60)[0].startswith("Cancelled at epoch")


def test_hub_pull_and_push(client, tmp_path, monkeypatch):
    with HubServer() as hub:
        use_hub(monkeypatch, hub.url, str(tmp_path / "hub"))  # the app runs in this process
        msg = client.predict("student", "owner/app-student", "hf_test", False, api_name="/push")
        assert "owner/app-student" in msg and ("model", "owner/app-student") in hub.repos
        msg = client.predict("owner/app-student", "", api_name="/pull")
        assert "Pulled **owner/app-student**" in msg
        with pytest.raises(AppError, match="repo not found"):
            client.predict("owner/missing", "", api_name="/pull")
        with pytest.raises(AppError, match="OWNER/NAME"):
            client.predict("student", "not a repo", "", False, api_name="/push")
