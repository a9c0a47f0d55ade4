"""kdcore.service without the UI: the app's distillation runs (queue, cancel, folders, the finished student)."""

from __future__ import annotations

import threading

import pytest

import kdcore.distill
from kdcore.errors import KDCoreError
from kdcore.service import ModelStore, RunRegistry


def fake_run(cfg, data, out, stop: threading.Event | None = None, **_):
    """``kdcore.distill.run``'s event stream without training: steps until stopped, or ``done`` at once."""
    if cfg.train.epochs == 1:
        yield {"event": "done", "best_dir": str(out / "best")}
        return
    while not stop.is_set():
        yield {"event": "step"}
    yield {"event": "stopped", "epoch": 0, "step": 1}


@pytest.fixture
def registry(tmp_path, monkeypatch) -> RunRegistry:
    monkeypatch.setattr(kdcore.distill, "run", fake_run)
    return RunRegistry(ModelStore({"teacher": str(tmp_path / "teacher")}), tmp_path / "runs")


def start(registry: RunRegistry, session: str, epochs: int = 5):
    """Submit and start a run; returns its event stream after its ``start`` event."""
    registry.queued(session)
    events = registry.run(session, "teacher", "data", epochs=epochs)
    first = next(events)
    return first, events


def test_a_run_uses_the_preset_the_store_teacher_and_a_new_folder(registry, tmp_path):
    first, events = start(registry, "s", epochs=1)
    assert first["event"] == "start" and first["out"].parent == tmp_path / "runs" and first["out"].is_dir()
    cfg = first["config"]
    assert cfg.teacher == str(tmp_path / "teacher") and cfg.train.epochs == 1
    assert cfg.student == registry.defaults().student and cfg.distill == registry.defaults().distill
    done = next(events)
    assert done["name"] == f"distilled/{first['out'].name}" and done["name"] in registry.store.names()
    assert registry.store.ref(done["name"]) == str(first["out"] / "best")


def test_cancel_stops_the_running_run_and_drops_queued_ones_only(registry):
    assert not registry.cancel("s")  # nothing to cancel: the next run is not pre-cancelled
    _, running = start(registry, "s")
    assert next(running)["event"] == "step"
    registry.queued("s")  # a second click waits behind the first
    assert registry.cancel("s")
    assert [e["event"] for e in running][-1] == "stopped"  # the run ends itself
    assert next(registry.run("s", "teacher", "data"))["event"] == "dropped"  # dropped at the front
    assert start(registry, "s")[0]["event"] == "start"  # a later run is not
    assert start(registry, "other")[0]["event"] == "start"  # nor another session's


def test_a_run_without_data_fails_and_leaves_the_queue_consistent(registry):
    registry.queued("s")
    with pytest.raises(KDCoreError, match="data folder"):
        next(registry.run("s", "teacher", ""))
    assert not registry.cancel("s")  # nothing left running or queued


def test_runs_that_start_in_the_same_second_get_their_own_folders(registry, monkeypatch):
    from kdcore import service

    monkeypatch.setattr(service.time, "strftime", lambda fmt: "20261127-140527")
    first, second = (registry.new_dir("arch") for _ in range(2))
    assert (first.name, second.name) == ("20261127-140527-arch", "20261127-140527-arch-2")
    assert second.is_dir() and not list(second.iterdir())


def test_runs_default_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("KDCORE_RUNS", raising=False)
    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path))
    assert RunRegistry(ModelStore()).root == tmp_path / "runs"
