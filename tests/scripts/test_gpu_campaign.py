"""scripts/gpu_campaign.py: the plan's commands parse with today's CLI, and the results pack keeps the small files."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bench import distill_ablation
from kdcore.cli import build_parser
from scripts import gpu_campaign
from tests.helpers import REPO


def options(**kw) -> argparse.Namespace:
    """The plan's options: ``kw`` over the defaults (tiny, the bundled teacher, every student, 20 epochs)."""
    return argparse.Namespace(**{"tiny": True, "teacher": "teacher", "students": ",".join(distill_ablation.STUDENTS),
                                 "epochs": 20, "amp": None} | kw)


@pytest.mark.parametrize("tiny,teacher", [(False, None), (True, None), (False, "teacher"), (False, "runs/t/best")])
def test_plan_commands_parse(tiny, teacher, tmp_path):
    shipped = teacher is not None
    a = options(tiny=tiny, teacher=teacher, amp="bf16" if shipped else None)
    stage1, stage2 = gpu_campaign.plan(a, tmp_path / "pack.safetensors", tmp_path / "runs")
    names = [n for n, _, _ in stage1 + stage2]
    assert len(names) == len(set(names))
    assert sum(n.startswith("teacher") for n in names) == (0 if shipped else 2 if tiny else 4)
    n_students, n_configs = len(distill_ablation.STUDENTS), len(distill_ablation.CONFIGS)
    assert sum(n.startswith("ablation/") and "@" not in n for n in names) == n_students * n_configs * (2 if tiny else 5)
    # the tuning grid (seed 0) and the tuned thesis on seeds 1-2, for every student; the per-step control
    assert sum("@w" in n or "@T" in n for n in names) == n_students * 5 + (1 if tiny else 2)  # the shipped one's
    assert sum("@perstep" in n for n in names) == (2 if tiny else 3)
    assert all(prio == 0 for n, _, prio in stage1 if n.startswith("teacher"))
    parser = build_parser()
    for name, argv, _ in stage1 + stage2:
        assert argv[0] == "-m", name
        if argv[1] == "kdcore":
            parser.parse_args(argv[2:])  # exits (SystemExit) on an unknown flag
        else:
            assert argv[1].startswith("bench.") and importlib.util.find_spec(argv[1]) and "--only" in argv, name
            key = argv[argv.index("--only") + 1]
            assert name.endswith(key)
            if argv[1] == "bench.distill_ablation":
                opts = distill_ablation.parser().parse_args(argv[2:])
                assert (opts.teacher, opts.amp) == (teacher or "teacher", a.amp)
    first = [n.split("/")[2] for n, _, prio in stage2 if n.startswith("ablation/") and prio == 0]
    # the longest cells start first
    assert first[0] == "4-thesis" and first[-1] in ("2-kd", "6-dkd", "7-dist", "8-kd+ls")


def test_pack_results_keeps_small_files_and_student_weights(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"t" * 100)
    runs = tmp_path / "runs"
    files = {
        "student-a/best/model.safetensors": b"s" * 3000, "student-a/metrics.jsonl": b"{}\n",
        "student-a/checkpoint.safetensors": b"c", "teacher-x/best/model.safetensors": b"w",
        "teacher-x/best/config.json": b"{}", "ablation/r/2-kd/seed0/cell.json": b"{}",
        "ablation/r/2-kd/seed0/best/model.safetensors": b"w", "logs/teacher-x.log": b"ok",
    }
    for rel, data in files.items():
        (runs / rel).parent.mkdir(parents=True, exist_ok=True)
        (runs / rel).write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    parts = gpu_campaign.pack_results(out, runs, teacher=teacher)
    blob = b"".join((out / p).read_bytes() for p in parts)
    (tmp_path / "all.tar").write_bytes(blob)
    with tarfile.open(tmp_path / "all.tar") as tar:
        names = set(tar.getnames())
    assert {"kdcore/bundled/models/teacher/model.safetensors", "runs/student-a/best/model.safetensors",
            "runs/student-a/metrics.jsonl", "runs/teacher-x/best/config.json", "runs/ablation/r/2-kd/seed0/cell.json",
            "runs/logs/teacher-x.log"} <= names
    assert not {"runs/student-a/checkpoint.safetensors", "runs/teacher-x/best/model.safetensors",
                "runs/ablation/r/2-kd/seed0/best/model.safetensors"} & names


def test_pack_results_adds_cut_cells_checkpoints_furthest_first_within_budget(tmp_path):

    runs = tmp_path / "runs"
    for seed, (epoch, kib) in enumerate(((3, 600), (11, 600), (7, 600), (1, 10))):  # cut cells
        cell = runs / "ablation" / "m" / "4-thesis" / f"seed{seed}"
        (cell / "best").mkdir(parents=True)
        (cell / "checkpoint.json").write_text(json.dumps({"epoch": epoch}))
        (cell / "checkpoint.safetensors").write_bytes(b"c" * (kib << 10))
        (cell / "best" / "model.safetensors").write_bytes(b"w" * 1000)
    done = runs / "ablation" / "m" / "2-kd" / "seed0"
    done.mkdir(parents=True)
    (done / "cell.json").write_text("{}")
    (done / "checkpoint.json").write_text(json.dumps({"epoch": 19}))
    (done / "checkpoint.safetensors").write_bytes(b"c" * 10)
    out = tmp_path / "out"
    out.mkdir()
    parts = gpu_campaign.pack_results(out, runs, budget_mb=1)
    (tmp_path / "all.tar").write_bytes(b"".join((out / p).read_bytes() for p in parts))
    with tarfile.open(tmp_path / "all.tar") as tar:
        names = set(tar.getnames())
    cell = "runs/ablation/m/4-thesis/seed"
    assert {f"{cell}1/checkpoint.safetensors", f"{cell}1/checkpoint.json", f"{cell}1/best/model.safetensors"} <= names
    assert not {f"{cell}0/checkpoint.safetensors", f"{cell}2/checkpoint.safetensors"} & names  # over the budget
    assert f"{cell}3/checkpoint.safetensors" in names  # the last, but small enough for what is left
    assert not any(n.startswith("kdcore/") for n in names)  # --shipped-teacher: the repo has it
    assert "runs/ablation/m/2-kd/seed0/checkpoint.safetensors" not in names  # finished: nothing to resume


def test_a_job_that_ran_out_of_gpu_memory_is_queued_again_with_one_process_fewer(tmp_path):
    pool = gpu_campaign.Pool(3, dict(__import__("os").environ), 0.0)
    script = tmp_path / "oom.py"
    script.write_text("import pathlib, sys\n"
                      "flag = pathlib.Path(sys.argv[1])\n"
                      "if not flag.exists():\n"
                      "    flag.touch(); print('torch.OutOfMemoryError: CUDA out of memory. Tried'); sys.exit(1)\n")
    job = gpu_campaign.Job("cell", [str(script), str(tmp_path / "tried")], 0, tmp_path / "cell.log")
    pool.add(job)
    fail = gpu_campaign.Job("bad", ["-c", "raise SystemExit(3)"], 0, tmp_path / "bad.log")
    pool.add(fail)
    for _ in range(200):
        pool.poll()
        if all(j.status in ("ok", "failed") for j in pool.jobs):
            break
        __import__("time").sleep(0.05)
    assert job.status == "ok" and job.info == {"oom": 1} and pool.parallel == 2
    assert fail.status == "failed" and "oom" not in fail.info


def test_finished_cells_are_the_committed_ones():

    cells = json.loads((REPO / "bench" / "results" / "distill_ablation.json").read_text())["cells"]
    assert gpu_campaign.finished_cells() == {f"ablation/{k}" for k in cells}


def test_a_verdict_on_fewer_than_five_seeds_is_provisional():
    five = {"diff": -0.05, "ci95": [-0.08, -0.02], "n": 5, "p": 0.0625}
    assert distill_ablation.verdict(five) == "contradicted (it lowers accuracy)"
    assert distill_ablation.verdict(five | {"n": 3}) == "contradicted (it lowers accuracy); provisional, 3 of 5 seeds"
    assert distill_ablation.verdict(five | {"ci95": [-0.01, 0.02]}) == "not shown (the interval spans 0)"
    assert distill_ablation.verdict(five | {"ci95": None, "n": 1}) == "not tested (one seed)"


def test_tuned_verdicts_pick_each_setting_on_the_tuning_seed_and_compare_on_the_others():
    def cell(acc: float) -> dict:
        return {"final": {"accuracy": acc, "macro_f1": acc, "pred": [0, 1, 0, 1]}}

    cells = {}
    for sd in range(5):  # T2 wins seed 0, then beats the student alone on seeds 1-4; the base KD loses to it
        cells |= {f"s/1-alone/{sd}": cell(0.90), f"s/2-kd/{sd}": cell(0.91 if sd else 0.90),
                  f"s/2-kd@T2/{sd}": cell(0.93 + 0.001 * sd if sd else 0.92),
                  f"s/2-kd@perstep/{sd}": cell(0.99)}  # a control, never a grid setting
    assert distill_ablation.tuned_settings(cells, "s", ["1-alone", "2-kd", "3-diswot"]) == {
        "1-alone": "1-alone", "2-kd": "2-kd@T2"}
    res = {"cells": cells, "settings": {"students": ["s"], "configs": ["1-alone", "2-kd"], "seeds": [0, 1, 2, 3, 4]}}
    summary = {"s": {}}
    lines = distill_ablation.tuned_claims(res, summary, np.array([0, 1, 0, 1]), 2)
    tuned = summary["s"]["tuned"]
    assert tuned["2-kd@T2 vs 1-alone"]["seeds"] == [1, 2, 3, 4]  # seed 0 chose the setting, so it is left out
    assert tuned["2-kd@T2 vs 1-alone"]["over_seeds"]["accuracy"]["diff"] == pytest.approx(0.0325)
    claim = distill_ablation.CLAIMS[0][0]
    assert tuned["verdicts"][claim] == "supported; provisional, 4 of 5 seeds"
    assert any("2-kd@T2 - 1-alone" in line for line in lines)
    cells = {k: v for k, v in cells.items() if not k.startswith("s/2-kd@T2/") or k.endswith("/0")}
    summary = {"s": {}}  # the pick has run at the tuning seed only: the claim is shown as pending, not dropped
    lines = distill_ablation.tuned_claims(res | {"cells": cells}, summary, np.array([0, 1, 0, 1]), 2)
    assert summary["s"]["tuned"]["verdicts"][claim] == "pending: the picks share 0 seeds besides the tuning seed"
    assert any("2-kd@T2 - 1-alone | 0 | - | - | **pending" in line for line in lines)
    one = cells | {"s/2-kd@T2/1": cell(0.93)}  # one seed besides the tuning seed: still pending, in the singular
    summary = {"s": {}}
    distill_ablation.tuned_claims(res | {"cells": one}, summary, np.array([0, 1, 0, 1]), 2)
    assert summary["s"]["tuned"]["verdicts"][claim] == "pending: the picks share 1 seed besides the tuning seed"
    cells = {k: v for k, v in cells.items() if "@T2" not in k}  # no grid: no tuned section
    assert distill_ablation.tuned_claims(res | {"cells": cells}, {"s": {}}, np.array([0, 1, 0, 1]), 2) == []


def test_the_curves_show_each_tuned_pick_beside_its_base():
    def cell(curve: list[float]) -> dict:
        return {"final": {"accuracy": curve[-1], "macro_f1": curve[-1], "pred": [0, 1]}, "curve": curve}

    cells = {f"s/2-kd/{sd}": cell([0.5, 0.6, 0.7, 0.8]) for sd in (0, 1)}
    cells |= {"s/2-kd@T2/0": cell([0.6, 0.8, 0.9, 0.9]), "s/2-kd@T2/1": cell([0.6, 0.8, 0.8, 0.9]),
              "s/2-kd@T8/0": cell([0.1, 0.2, 0.3, 0.4])}  # loses at the tuning seed: not a pick, not shown
    res = {"cells": cells, "settings": {"students": ["s"], "configs": ["2-kd"], "seeds": [0, 1], "epochs": 4}}
    rows = [line for line in distill_ablation.curves(res) if line.startswith("| s |")]
    assert [r.split(" | ")[1:3] for r in rows] == [["2-kd", "2"], ["2-kd@T2", "2"]]
    assert rows[1].endswith("| 0.9000 | +0.1000 |")  # epochs 2 to 4 of the mean curve: 0.8 -> 0.9


def test_tuning_variants_change_only_their_knob():
    assert distill_ablation.variant("2-kd@T2") == ("2-kd", {"loss": {"ce": 1.0, "kd": 1.0}, "temperature": 2.0})
    base, spec = distill_ablation.variant("4-thesis@w0.1")
    assert base == "4-thesis" and spec["loss"] == {"ce": 1.0, "kd": 1.0, "feat": 0.1, "sem": 0.1}
    assert spec["sem_map"] == "lrp" and distill_ablation.CONFIGS["4-thesis"]["loss"]["sem"] == 1.0  # base untouched
    assert distill_ablation.variant("4-thesis@perstep")[1] == distill_ablation.CONFIGS["4-thesis"] | {
        "teacher_cache": False}
    with pytest.raises(ValueError, match="variant"):
        distill_ablation.variant("2-kd@x3")


def test_mps_is_off_without_its_control_program(monkeypatch):
    monkeypatch.setattr(gpu_campaign.shutil, "which", lambda name: None)
    assert gpu_campaign.start_mps() == "off: no nvidia-cuda-mps-control"


def test_plan_puts_the_students_first_and_the_proxy_validation_last(tmp_path):
    _, stage2 = gpu_campaign.plan(options(), tmp_path / "pack.safetensors", tmp_path / "runs")
    students = [n for n, _, prio in stage2 if prio == 0 and n.startswith("student")]
    last = max(prio for *_, prio in stage2)
    assert len(students) == 5 and last > 3 and all(n.startswith("rank/") for n, _, prio in stage2 if prio == last)


def test_select_keeps_the_named_jobs_that_are_not_finished(tmp_path):
    _, stage2 = gpu_campaign.plan(options(), tmp_path / "pack.safetensors", tmp_path / "runs")
    mobile = "ablation/mobilenetv2_035"
    picked = gpu_campaign.select(stage2, [f"{mobile}/3-diswot/*", f"{mobile}/4-thesis/1"], {f"{mobile}/3-diswot/0"})
    assert [n for n, *_ in picked] == [f"{mobile}/4-thesis/1", f"{mobile}/3-diswot/1"]
    assert len(gpu_campaign.select(stage2, ["ablation/*"], set())) == sum(n.startswith("ablation/") for n, *_ in stage2)


def test_plan_starts_the_mobile_student_with_its_lrp_cells():
    _, stage2 = gpu_campaign.plan(options(tiny=False), REPO / "pack.safetensors", REPO / "runs")
    mobile = sorted((prio, i, n) for i, (n, _, prio) in enumerate(stage2) if n.startswith("ablation/mobilenetv2_035"))
    first = [n.split("/", 2)[2] for *_, n in mobile[:10]]
    assert {n.split("/")[0] for n in first} == {"4-thesis", "5b-diswot+lrp"}  # every seed of the sem(lrp) cells


def test_a_cell_cut_after_training_comes_back_without_its_checkpoint_and_trains_no_more(
        tmp_path, tiny_data, tiny_model_dir):

    runs = tmp_path / "runs"

    def argv(cells: Path) -> list[str]:
        return ["--data", str(tiny_data), "--teacher", str(tiny_model_dir), "--students", "test_resnet", "--size",
                "32", "--epochs", "2", "--batch-size", "8", "--split", str(tmp_path / "split.json"), "--runs",
                str(cells), "--out", str(tmp_path / "t"), "--only", "test_resnet/2-kd/0"]

    assert distill_ablation.main(argv(runs / "ablation")) == 0
    cell = runs / "ablation" / "test_resnet" / "2-kd" / "seed0"
    first = json.loads((cell / "cell.json").read_text())
    (cell / "cell.json").unlink()  # as if the deadline cut it after its last epoch
    assert gpu_campaign.cut_cells(runs) == [cell] and gpu_campaign.trained_out(cell)
    out = tmp_path / "out"
    out.mkdir()
    parts = gpu_campaign.pack_results(out, runs)
    back = tmp_path / "back"
    (tmp_path / "all.tar").write_bytes(b"".join((out / p).read_bytes() for p in parts))
    with tarfile.open(tmp_path / "all.tar") as tar:
        tar.extractall(back, filter="data")
    came = back / "runs" / "ablation" / "test_resnet" / "2-kd" / "seed0"
    assert all((came / m / "model.safetensors").is_file() for m in ("best", "last"))
    assert not list(came.glob("checkpoint*"))
    log = (came / "metrics.jsonl").read_text()
    assert distill_ablation.main(argv(back / "runs" / "ablation")) == 0
    again = json.loads((came / "cell.json").read_text())
    assert (came / "metrics.jsonl").read_text() == log and not list(came.glob("checkpoint*"))  # no epoch ran
    assert again["pred"] == first["pred"] and again["best_epoch"] == first["best_epoch"]
    report = [*argv(back / "runs" / "ablation")[:-2], "--configs", "2-kd", "--seeds", "0", "--report"]
    assert distill_ablation.main(report) == 0  # tabulated through bench.report: JSON, markdown, command
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["command"].startswith("python -m bench.distill_ablation --data ") and table["command"].endswith(
        "--report")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# Distillation ablation (32 px, 2 epochs") and f"Command: `{table['command']}`" in md
    assert f"| test_resnet | 2-kd | 1 | {again['final']['accuracy']:.4f} ± 0.0000 |" in md  # the final epoch's
    assert again["curve"][-1] == pytest.approx(again["final"]["accuracy"]) and "sem_rules" in again


def test_a_cut_cell_that_has_not_trained_out_brings_its_checkpoint(tmp_path):

    cell = tmp_path / "runs" / "ablation" / "m" / "4-thesis" / "seed0"
    (cell / "best").mkdir(parents=True)
    (cell / "config.json").write_text(json.dumps({"train": {"epochs": 20}}))
    (cell / "checkpoint.json").write_text(json.dumps({"epoch": 18}))
    assert not gpu_campaign.trained_out(cell)
    (cell / "checkpoint.json").write_text(json.dumps({"epoch": 19}))
    assert gpu_campaign.trained_out(cell)


@pytest.mark.slow
def test_parallel_cells_run_as_processes_and_the_report_shows_their_curves(tmp_path, tiny_data, tiny_model_dir):

    argv = ["--data", str(tiny_data), "--teacher", str(tiny_model_dir), "--students", "test_resnet", "--size", "32",
            "--epochs", "2", "--batch-size", "8", "--split", str(tmp_path / "split.json"), "--runs",
            str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--configs", "1-alone,6-dkd", "--seeds", "0",
            "--views", "2"]
    assert distill_ablation.main([*argv, "--parallel", "2"]) == 0
    cells = {c: tmp_path / "runs" / "test_resnet" / c / "seed0" / "cell.json" for c in ("1-alone", "6-dkd")}
    assert all(p.is_file() for p in cells.values())
    saved = {c: json.loads((tmp_path / "runs" / "test_resnet" / c / "seed0" / "config.json").read_text())
             for c in cells}
    assert saved["6-dkd"]["distill"]["loss"] == {"ce": 1.0, "dkd": 1.0}
    assert [saved[c]["train"]["views"] for c in cells] == [2, 2]  # the student alone sees the same views
    table = json.loads((tmp_path / "t.json").read_text())
    assert sorted(table["cells"]) == ["test_resnet/1-alone/0", "test_resnet/6-dkd/0"]
    md = (tmp_path / "t.md").read_text()
    assert "each image one of 2 fixed augmented views" in md.splitlines()[0]
    assert "Validation curves" in md and "| test_resnet | 6-dkd | 1 |" in md and "(6-dkd) - (1-alone)" in md
    curve = json.loads(cells["6-dkd"].read_text())["curve"]  # one seed: the mean curve is its curve
    row = [line for line in md.splitlines() if line.startswith("| test_resnet | 6-dkd | 1 | ")][-1]  # the curves
    assert "rise, epoch 1 to 2" in md and row.endswith(f"| {curve[1] - curve[0]:+.4f} |")
    # a later run of a subset (here one configuration, its run folders gone) keeps the table's other cells
    shutil.rmtree(tmp_path / "runs")
    assert distill_ablation.main([*("1-alone" if v == "1-alone,6-dkd" else v for v in argv), "--report"]) == 0
    again = json.loads((tmp_path / "t.json").read_text())
    assert again["cells"] == table["cells"] and again["settings"]["configs"] == ["1-alone", "6-dkd"]
    assert "(6-dkd) - (1-alone)" in (tmp_path / "t.md").read_text()
