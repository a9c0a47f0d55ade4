"""``kdcore reproduce``: the whole pipeline on tiny data, interrupted and resumed at every stage."""

import json
import shlex
import threading
from pathlib import Path

import pytest

from kdcore.cli import main
from kdcore.errors import KDCoreError
from kdcore.models import read_config
from kdcore.reproduce import STATE_FILE, reproduce

STAGES = ["teacher", "rank", "student", "evaluate", "calibrate"]


def _run(data, out, stop_when, **kw) -> list[dict]:
    """All events of one call; ``stop_when(event)`` sets the stop event."""
    stop = threading.Event()
    events = []
    for e in reproduce(str(data), out, "tiny", stop=stop, **kw):
        events.append(e)
        if stop_when(e):
            stop.set()
    return events


def _stage_done(name):
    return lambda e: e["event"] == "stage" and e["stage"] == name and e["status"] == "done"


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """The pipeline stopped in the middle of the teacher's training, then after each stage, then finished."""
    out = tmp_path_factory.mktemp("reproduce") / "out"
    calls = [_run(tiny_data, out, lambda e: e["event"] == "epoch" and e["stage"] == "teacher", rank=True)]
    for name in STAGES:
        calls.append(_run(tiny_data, out, _stage_done(name), resume=True))
    return out, calls


@pytest.mark.slow
def test_each_call_skips_the_finished_stages_and_continues_the_half_finished_one(runs):
    out, calls = runs
    first = calls[0]
    assert first[-1]["event"] == "stopped" and first[-1]["stage"] == "teacher"
    assert set(json.loads((out / STATE_FILE).read_text())["stages"]) == set(STAGES)  # all finished by now
    resumed = calls[1]  # continues the teacher from its checkpoint: epoch 0 is not trained again
    assert [e["epoch"] for e in resumed if e["event"] == "epoch"] == [1]
    for i, name in enumerate(STAGES):
        events = calls[i + 1]
        status = {e["stage"]: e["status"] for e in events if e["event"] == "stage"}
        assert all(status[s] == "skipped" for s in STAGES[:i]), (name, status)
        assert status[name] == "done"
        if name != "calibrate":
            assert events[-1]["event"] == "stopped" and events[-1]["stage"] == STAGES[i + 1]
    final = calls[-1][-1]
    assert final["event"] == "done" and final["done"] == final["total"]
    dones = [e["done"] for c in calls for e in c]
    assert all(0 <= d <= final["total"] for d in dones)
    metrics = (out / "teacher" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [0, 1]


@pytest.mark.slow
def test_outputs_summary_and_commands(runs):
    out, _ = runs
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["time_s"]) == set(STAGES) and summary["ranking"] == ["test_resnet"]
    for m in ("teacher", "student"):
        r = summary["models"][m]
        assert 0 <= r["accuracy"] <= 1 and r["temperature"] > 0
        last = json.loads((out / m / "metrics.jsonl").read_text().splitlines()[-1])
        assert r["final_accuracy"] == last["val_accuracy"] and r["epochs"] == last["epoch"] + 1
        folder = out / m / "best"
        assert (folder / "README.md").is_file() and "calibration" in read_config(folder)["kdcore"]
        assert (out / "eval" / f"{m}.json").is_file() and (out / "calibration" / f"{m}.json").is_file()
    assert "| teacher |" in (out / "summary.md").read_text()
    commands = [c for c in (out / "commands.sh").read_text().splitlines() if c.startswith("python -m kdcore")]
    assert [c.split()[3] for c in commands] == ["train-teacher", "rank", "distill", "evaluate", "evaluate",
                                               "calibrate", "calibrate"]
    assert json.loads((out / "configs" / "student.json").read_text())["teacher"] == str(out / "teacher" / "best")


@pytest.mark.slow
def test_cli_on_a_finished_run_skips_everything(runs, tiny_data, capsys):
    out, _ = runs
    assert main(["reproduce", "--data", str(tiny_data), "--out", str(out), "--preset", "tiny", "--resume"]) == 0
    text = capsys.readouterr().out
    assert all(f"{s}: skipped" in text for s in STAGES) and "| student |" in text


@pytest.mark.slow
def test_refuses_an_existing_run_without_resume(runs, tiny_data):
    out, _ = runs
    with pytest.raises(KDCoreError, match="--resume"):
        next(reproduce(str(tiny_data), out, "tiny"))


def test_unknown_preset_is_one_line(tiny_data, tmp_path):
    with pytest.raises(KDCoreError, match="unknown preset"):
        next(reproduce(str(tiny_data), tmp_path / "o", "huge"))


@pytest.mark.slow
def test_gpu_throughput_bench_runs_on_cpu(tmp_path):
    from bench import gpu_throughput

    out = tmp_path / "gt"
    assert gpu_throughput.main(["--device", "cpu", "--teacher-arch", "test_resnet", "--student", "test_resnet",
                                "--size", "32", "--batch-size", "8", "--images", "16", "--steps", "1",
                                "--warmup", "1", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["images_per_s"]
    assert set(rows) == {"teacher", "kd", "thesis"}
    assert all(r["fit"] > 0 and r["bare"] > 0 and r["ratio"] == r["fit"] / r["bare"] for r in rows.values())


@pytest.mark.slow
def test_commands_sh_trains_with_the_same_configs(runs, tmp_path):
    out, _ = runs
    lines = [shlex.split(c) for c in (out / "commands.sh").read_text().splitlines() if c.startswith("python")]
    for verb in ("train-teacher", "distill"):
        argv = next(c[3:] for c in lines if c[3] == verb)
        run_dir = argv[argv.index("--out") + 1]
        argv[argv.index("--out") + 1] = str(tmp_path / verb)
        assert main(argv) == 0
        again, original = (json.loads((Path(d) / "config.json").read_text()) for d in (tmp_path / verb, run_dir))
        assert again["train"] == original["train"] and again["arch"] == original["arch"]


@pytest.mark.slow
def test_bench_report_of_a_finished_reproduction_trains_nothing(runs, tiny_data, tmp_path):
    from bench import reproduce as bench_reproduce

    out, _ = runs
    log = (out / "student" / "metrics.jsonl").read_text()
    report = tmp_path / "r"
    assert bench_reproduce.main(["--data", str(tiny_data), "--runs", str(out), "--preset", "tiny",
                                 "--out", str(report)]) == 0
    assert (out / "student" / "metrics.jsonl").read_text() == log  # resumed: every stage was done
    md = report.with_suffix(".md").read_text()
    assert md.startswith("# Reproduction of both models, preset `tiny`") and "final epoch" in md
    assert "python -m kdcore train-teacher" in md
    res = json.loads(report.with_suffix(".json").read_text())
    assert res["command"].startswith("python -m bench.reproduce") and set(res["models"]) == {"teacher", "student"}
