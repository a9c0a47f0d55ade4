"""`evaluate`'s JSON contract and the CLI's one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from tests.helpers import CLASSES, REPO, make_dataset

FIELDS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "roc_auc", "ece", "num_images", "skipped_files",
          "params", "flops", "latency_ms_batch1", "input_size"}


@pytest.fixture
def kdcore(capsys):
    """Run the CLI in-process (as ``python -m kdcore`` would) and return (exit code, stdout, stderr)."""
    from kdcore.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_module_entry_point_runs_as_a_program(tiny_data, tmp_path):
    res = subprocess.run([sys.executable, "-m", "kdcore", "dedup", str(tiny_data), "--json", str(tmp_path / "d.json")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0 and "exact_groups" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "kdcore", "dedup", str(tmp_path / "none")], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr


def test_evaluate_json_contract(tiny_model_dir, tmp_path):
    from kdcore.engine.evaluate import evaluate

    data = make_dataset(tmp_path / "d", per_class=5)
    (data / "notumor" / "broken.jpg").write_text("oops")
    r = evaluate(str(tiny_model_dir), str(data), latency_repeats=3)
    assert set(r) >= FIELDS
    assert r["num_images"] == 20 and len(r["skipped_files"]) == 1
    assert set(r["per_class"]) == set(CLASSES) and sum(v["support"] for v in r["per_class"].values()) == 20
    assert sum(map(sum, r["confusion_matrix"])) == 20 and r["input_size"] == [1, 32, 32]
    assert 0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1 and r["params"] > 0 and r["flops"] > 0
    json.dumps(r)


def test_cli_evaluate_writes_json_and_table(kdcore, tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "e.json"
    code, stdout, _ = kdcore("evaluate", "--model", tiny_model_dir, "--data", tiny_data, "--json", out)
    assert code == 0 and "macro-F1" in stdout and set(json.loads(out.read_text())) >= FIELDS


@pytest.mark.parametrize("case", ["missing_data", "empty_data", "no_weights", "wrong_classes", "missing_model"])
def test_cli_bad_input_is_one_line(kdcore, case, tiny_model_dir, tiny_data, tmp_path):
    model, data = tiny_model_dir, tiny_data
    if case == "missing_data":
        data = tmp_path / "nothing"
    elif case == "empty_data":
        (tmp_path / "e").mkdir()
        data = tmp_path / "e"
    elif case == "no_weights":
        model = tmp_path / "m"
        model.mkdir()
        (model / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    elif case == "wrong_classes":
        data = make_dataset(tmp_path / "other", per_class=1)
        (data / "glioma").rename(data / "cat")
    elif case == "missing_model":
        model = tmp_path / "no-model"
    code, _, err = kdcore("evaluate", "--model", model, "--data", data)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")


def test_cli_dedup_and_split(kdcore, tiny_data, tmp_path):
    code, out, _ = kdcore("dedup", tiny_data, "--json", tmp_path / "d.json")
    assert code == 0 and "exact_groups" in out
    assert json.loads((tmp_path / "d.json").read_text())["summary"]["images"] == 48
    code, _, _ = kdcore("split", tiny_data, "--out", tmp_path / "s.json")
    assert code == 0 and json.loads((tmp_path / "s.json").read_text())["val"]


def test_cli_train_teacher_and_resume(kdcore, tiny_data, tmp_path):
    args = ["train-teacher", "--arch", "test_resnet", "--data", tiny_data, "--out", tmp_path / "run", "--size", "32",
            "--epochs", "1", "--batch-size", "8", "--split", tmp_path / "split.json"]
    assert kdcore(*args)[0] == 0
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert kdcore(*args)[0] == 2  # refuses to overwrite a run without --resume
    assert kdcore(*args, "--resume")[0] == 0
