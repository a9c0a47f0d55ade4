"""The learning-rate grid of a student alone runs end to end on tiny settings and picks the best final epoch."""

from __future__ import annotations

import json

from bench import student_lr


def test_grid_runs_each_rate_once_picks_by_final_accuracy_and_reports_from_the_cells(tiny_model_dir, tiny_data,
                                                                                    tmp_path):
    out, runs = tmp_path / "results" / "lr", tmp_path / "runs"
    cells = {lr: runs / f"lr{lr:g}" / "test_resnet" / "1-alone" / "seed0" / "cell.json" for lr in (1e-3, 3e-2)}
    argv = ["--data", str(tiny_data), "--teacher", str(tiny_model_dir), "--split", str(tmp_path / "split.json"),
            "--students", "test_resnet", "--lrs", "1e-3,3e-2", "--size", "32", "--epochs", "2", "--batch-size", "8",
            "--max-images", "16", "--runs", str(runs), "--out", str(out)]
    assert student_lr.main(argv) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert [(r["student"], r["lr"]) for r in res["rows"]] == [("test_resnet", 1e-3), ("test_resnet", 3e-2)]
    assert all(f.is_file() for f in cells.values())
    best = max(res["rows"], key=lambda r: r["accuracy"])
    assert res["picks"] == {"test_resnet": best["lr"]} and "lr" not in res["settings"]
    assert all(len(r["curve"]) == 2 and 0 <= r["accuracy"] <= 1 for r in res["rows"])
    stamps = {lr: f.stat().st_mtime_ns for lr, f in cells.items()}
    assert student_lr.main([*argv, "--report"]) == 0  # tabulates the finished cells, trains nothing
    assert {lr: f.stat().st_mtime_ns for lr, f in cells.items()} == stamps
    md = out.with_suffix(".md").read_text()
    assert f"{best['lr']:g} (pick)" in md and "final epoch" in md and "bench.student_lr" in md
