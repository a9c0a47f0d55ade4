"""The app through gradio_client, launched on loopback with tiny models: every tab's functions and the bad inputs."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from kdcore.distill import LOSSES
from kdcore_app.state import display_name
from tests.helpers import CLASSES, axial_volume, synthetic_slice, write_dicom, write_nifti
from tests.hub_server import HubServer, use_hub


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app["url"], verbose=False)


SHOWN = [display_name(c) for c in CLASSES]  # the class names the UI shows


def _diagnose(client: Client, path: Path, teacher: str = "teacher", student: str = "student", slice_index: int = 0):
    """Teacher and student probabilities and summaries, agreement, gallery, the slice shown, its note, slice."""
    return client.predict(handle_file(str(path)), teacher, student, slice_index, 0.7, api_name="/diagnose")


def test_diagnose_both_models_and_heatmaps(client, files):
    t_probs, t_info, s_probs, s_info, agreement, gallery, shown, note, _ = _diagnose(client, files["slice"])
    gallery = [(g["image"], g["caption"]) for g in gallery]
    assert {c["label"] for c in t_probs["confidences"]} == set(SHOWN) and "no tumour" in SHOWN
    assert t_probs["label"] in SHOWN and s_probs["label"] in SHOWN
    assert np.asarray(Image.open(shown)).shape[:2] == (96, 96) and "one slice" in note
    assert "inference" in t_info and "params" in t_info and "MiB" in s_info
    assert ("agree" in agreement) and "all results in" in agreement
    assert [c for _, c in gallery] == ["teacher · LRP", "teacher · Grad-CAM", "student · LRP", "student · Grad-CAM"]
    for item in gallery:  # four RGB overlays at the upload's aspect, colour bar drawn in
        img = np.asarray(Image.open(item[0]))
        assert img.shape == (96, 96, 3) and img.std() > 0


def test_a_typed_tumour_box_is_outlined_on_every_map(client, files):
    gallery = client.predict(handle_file(str(files["slice"])), "teacher", "student", 0, 0.7, "0.5 0.5 0.5 0.25",
                             api_name="/diagnose")[5]
    def green(pixel: np.ndarray) -> bool:  # the gallery's files are lossy: green well above red and blue
        return pixel[1] - max(pixel[0], pixel[2]) > 60

    for item in gallery:  # 96 x 96: the box's edges at x 24 and 72, y 36 and 60
        img = np.asarray(Image.open(item["image"])).astype(int)
        assert green(img[48, 24]) and green(img[36, 48]) and green(img[60, 60]) and not green(img[48, 48])
    with pytest.raises(AppError, match="tumour box: a box's values are fractions"):
        client.predict(handle_file(str(files["slice"])), "teacher", "student", 0, 0.7, "50 50 20 20",
                       api_name="/diagnose")


def test_concurrent_sessions_get_their_own_results(app, files, tmp_path):
    """Two browser sessions diagnose different uploads at the same time: each gets its own overlays back."""
    other = tmp_path / "other.png"
    Image.fromarray(synthetic_slice(3, np.random.default_rng(5), 72)).save(other)
    a, b = Client(app["url"], verbose=False), Client(app["url"], verbose=False)
    jobs = [(c.submit(handle_file(str(p)), "teacher", "student", 0, 0.7, api_name="/diagnose"), size)
            for c, p, size in ((a, files["slice"], 96), (b, other, 72))]
    for job, size in jobs:
        gallery = job.result(timeout=120)[5]
        assert {np.asarray(Image.open(g["image"])).shape for g in gallery} == {(size, size, 3)}


def test_nifti_volume_at_a_chosen_slice_and_dicom(app, tmp_path):
    """A NIfTI volume of five different slices: the one asked for is the one shown; a DICOM file works too."""
    client = Client(app["url"], verbose=False)  # a new session: its slice slider has not seen a volume yet
    rng = np.random.default_rng(4)
    slices = [synthetic_slice(i % 4, rng, 64) for i in range(5)]
    volume = np.concatenate([axial_volume(s) for s in slices], axis=2)
    nifti = write_nifti(tmp_path / "volume.nii.gz", volume)
    t_probs, *_, gallery, shown, note, slice_index = _diagnose(client, nifti, slice_index=3)
    assert t_probs["label"] in SHOWN and len(gallery) == 4
    assert "NIfTI" in note and "slice 4 of 5" in note
    assert (slice_index["value"], slice_index["maximum"], slice_index["visible"]) == (3, 4, True)
    got = np.asarray(Image.open(shown).convert("L"), dtype=float)
    assert np.abs(got - slices[3]).mean() < np.abs(got - slices[2]).mean()
    with pytest.raises(AppError, match=r"out of range|greater than maximum"):  # the slider knows the volume now
        _diagnose(client, nifti, slice_index=9)
    dicom = write_dicom(tmp_path / "slice.dcm", slices[0].astype(np.uint16) * 200)
    t_probs, *_, note, _ = _diagnose(client, dicom)
    assert t_probs["label"] in SHOWN and "DICOM" in note


@pytest.mark.parametrize("name", ["rgba", "sixteen"])
def test_unusual_but_valid_pngs_work(client, files, name):
    t_probs, *_ = _diagnose(client, files[name])
    assert t_probs["label"] in SHOWN


@pytest.mark.parametrize("name, message", [
    ("text", "not a readable image"), ("truncated", "truncated"), ("empty", "empty"), ("huge", "larger than"),
])
def test_bad_uploads_give_one_line_errors_and_app_keeps_working(client, files, name, message):
    with pytest.raises(AppError, match=message) as e:
        _diagnose(client, files[name])
    assert "Traceback" not in str(e.value) and "/tmp/gradio" not in str(e.value)
    assert _diagnose(client, files["slice"])[0]["label"] in SHOWN


def test_no_upload_and_unknown_model(client, files):
    with pytest.raises(AppError, match="Upload an MRI slice"):
        client.predict(None, "teacher", "student", 0, 0.7, api_name="/diagnose")
    with pytest.raises(AppError, match="not in the model list"):
        _diagnose(client, files["slice"], student="nope")


def test_benchmark(client, tiny_data):
    """A compact table (per-class columns behind the toggle) and a reliability diagram that keeps its bin counts."""
    table, _f1, _cm, rel = client.predict(["teacher", "student"], str(tiny_data), False, api_name="/benchmark")
    assert [r[0] for r in table["data"]] == ["teacher", "student"]
    assert table["headers"] == ["model", "accuracy", "macro-F1", "M params", "latency ms", "ECE"]
    table, *_ = client.predict(["teacher"], str(tiny_data), True, api_name="/benchmark")
    assert {"F1 glioma", "F1 no tumour", "arch", "MFLOPs", "ECE at T=1"} <= set(table["headers"])
    counts = [t for t in json.loads(rel["plot"])["data"] if t["type"] == "bar"]
    assert len(counts) == 4 and all(sum(t["y"]) == 48 for t in counts)  # 48 images per model, before and after
    with pytest.raises(AppError, match=r"no such|not a|No such|does not"):
        client.predict(["teacher"], str(tiny_data / "nope"), False, api_name="/benchmark")


def test_benchmark_tab_shows_the_measured_reports(client, tmp_path):
    from kdcore_app.measured import REPORTS, report_markdown

    newest = ("Distillation on the v2 split at 64 px, 60 epochs, fixed views: every configuration on the <= 1% student "
              "and on the shipped student's architecture, 5 seeds each, and the tuning grid")
    assert next(iter(REPORTS)) == newest  # the tab opens on it
    for title in (newest,
                  "Distillation on the v2 split at 128 px: every configuration, three students, 15 epochs, 5 seeds",
                  "Distillation on the v2 split at 128 px, the <= 1% student: KD and DIST, 60 epochs, 5 seeds",
                  "Distillation on the v2 split, CPU scale: verdicts on the <= 1% student",
                  "Distillation: the thesis's claims, verdicts and ablation (first split)"):
        verdicts = client.predict(title, api_name="/report")
        assert verdicts.startswith("# Distillation ablation") and "| verdict |" in verdicts
    assert "| comparison (tuned) |" in client.predict(newest, api_name="/report")  # the claims with the tuning grid
    for title in REPORTS:
        text = client.predict(title, api_name="/report")
        assert text.startswith("# ") and "Command: `python -m " in text
    assert "no `bench/results/explain.md`" in report_markdown(
        "Explanations: tumour localisation, faithfulness, lattice", tmp_path)


def test_rank_and_distill_default_to_the_bundled_demo_set(client):
    table, _plot, pick = client.predict("teacher", "demo", None, None, "diswot", "test_resnet", 8,
                                        api_name="/rank")
    assert [r[1] for r in table["data"]] == ["test_resnet"] and pick["value"] == "test_resnet"
    status, _plot, name, runs = client.predict(*_distill_args("demo", images=None),  # empty budget: all
                                               api_name="/distill")
    assert status.startswith("Done in") and "teacher **" in status and "student **" in status
    assert "A short run" in status and "data demo" in status and "at its final epoch" in status
    assert name == f"distilled/{runs['value']}" and runs["value"].startswith("test_resnet-32px-short-ce+kd")


def test_rank_students(client, tiny_data):
    table, plot, pick = client.predict("teacher", str(tiny_data), None, None, "synflow",
                                       "test_resnet, test_efficientnet", 8, api_name="/rank")
    assert sorted(r[1] for r in table["data"]) == ["test_efficientnet", "test_resnet"]
    assert table["headers"][:4] == ["rank", "candidate", "family", "score"]
    acc = table["headers"].index("distilled acc")  # neither test model was in the proxy validation
    assert [r[acc] for r in table["data"]] == ["–", "–"]
    assert pick["value"] == table["data"][0][1]
    import json

    assert json.loads(plot["plot"])["data"][0]["type"] == "scatter"
    with pytest.raises(AppError, match="no candidate fits"):
        client.predict("teacher", str(tiny_data), 0.001, None, "params", "test_resnet", 8, api_name="/rank")


def _distill_args(data, epochs=1, images=16, arch="test_resnet", size=32, **w):
    weights = {k: 0.0 for k in LOSSES} | {"ce": 1.0, "kd": 1.0} | w
    return ["teacher", arch, size, epochs, images, *weights.values(), 4.0, "lrp", "cosine", str(data)]


def test_distill_run_joins_model_list_zip_and_diagnose(app, client, tiny_data, files):
    status, _plot, name, _runs = client.predict(*_distill_args(tiny_data, sem=1.0), api_name="/distill")
    assert status.startswith("Done") and name.startswith("distilled/")
    zpath = client.predict(name, api_name="/zip_model")
    assert sorted(Path(n).name for n in zipfile.ZipFile(zpath).namelist()) == [
        "README.md", "config.json", "model.safetensors"]
    assert _diagnose(client, files["slice"], student=name)[2]["label"] in SHOWN


def test_distill_failure_reports_and_app_keeps_serving(client, tiny_data, files):
    with pytest.raises(AppError, match="unknown architecture"):
        client.predict(*_distill_args(tiny_data, arch="no_such_net"), api_name="/distill")
    with pytest.raises(AppError, match="no such data folder"):
        client.predict(*_distill_args(tiny_data / "nope"), api_name="/distill")
    assert _diagnose(client, files["slice"])[0]["label"] in SHOWN


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
    a.predict("", api_name="/cancel_distill")  # "": the session's own runs
    _wait_for(second, running)  # the queued run starts once the first has stopped itself
    deadline = time.time() + 30  # the first job's client-side future may lag the server by a poll
    while not first.done():
        assert time.time() < deadline, "the cancelled run never ended"
        time.sleep(0.1)
    assert first.result(timeout=30)[0].startswith("Cancelled at epoch")  # the run's own last message
    # (its final output: outputs() may lack a message yielded just before the end, which arrives as the result)
    b.predict("", api_name="/cancel_distill")
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
