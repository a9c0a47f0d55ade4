"""The explanation bench's report: per-class localisation beside the occlusion check, rewritten from its JSON."""

from __future__ import annotations

import json

from bench import explain_bench


def _summary(mean: float) -> dict:
    return {"mean": mean, "ci95": [mean - 0.05, mean + 0.05]}


def _localisation(pointing: dict[str, float]) -> dict:
    metrics = ("pointing_game", "pointing_game_tol15", "energy_in_box", "centre_pointing_game",
               "centre_pointing_game_tol15", "uniform_pointing_game", "occlusion_tumour_drop",
               "occlusion_control_drop", "occlusion_tumour_larger")
    per_class = {c: {"n": 10, **{m: _summary(0.1) for m in metrics}, "pointing_game": _summary(p)}
                 for c, p in pointing.items()}
    return {"n": 20, "accuracy": 1.0, **{m: _summary(0.2) for m in metrics}, "per_class": per_class}


def _result() -> dict:
    settings = [{"method": m, "settings": s, "deletion_auc": 0.3, "insertion_auc": 0.7, "lattice16": 1.0,
                 "lattice32": 1.1, "localisation": _localisation(p)}
                for m, s, p in (("lrp", {"composite": "epsilon-plus-flat"}, {"glioma": 0.1, "meningioma": 0.8}),
                                ("gradcam", {"layer": "last"}, {"glioma": 0.0, "meningioma": 0.3}))]
    return {"command": "python -m bench.explain_bench", "threads": 1, "loadavg_start": [1.0, 1.0, 1.0],
            "batch": 32, "steps": 8, "patch": 8, "loc_n": 20, "settings": "default",
            "models": [{"model": "teacher", "settings": settings,
                        "time": {"lrp": {"time_s": 1.0, "x_forward_backward": 2.0}}, "forward_backward_s": 0.5}]}


def test_per_class_rows_put_each_settings_pointing_beside_the_occlusion_check():
    lines = explain_bench.per_class_table(_result())
    assert "pointing: lrp epsilon-plus-flat" in lines[0] and "pointing: gradcam last" in lines[0]
    assert lines[0].rstrip("|").split("|")[-1].strip() == "tumour drop larger"
    assert lines[2].startswith("| teacher | glioma | 10 | 0.100 [0.05, 0.15] | 0.000 [-0.05, 0.05] |")
    assert lines[3].startswith("| teacher | meningioma | 10 | 0.800 [0.75, 0.85] | 0.300 [0.25, 0.35] |")


def test_report_rewrites_the_markdown_from_the_json_alone(tmp_path):
    out = tmp_path / "explain"
    out.with_suffix(".json").write_text(json.dumps(_result()))
    assert explain_bench.main(["--report", "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert "Command: `python -m bench.explain_bench`" in text and "Per tumour class" in text


def test_main_table_shows_the_energy_on_the_background_and_a_dash_where_it_was_not_measured():
    res = _result()
    res["models"][0]["settings"][0]["localisation"]["energy_on_background"] = _summary(0.4)
    lines = explain_bench.markdown(res)
    rows = [line for line in lines if line.startswith("| teacher |")]
    header = next(line for line in lines if line.startswith("| model | method | settings"))
    column = [c.strip() for c in header.strip("|").split("|")].index("energy on background")
    assert [[c.strip() for c in r.strip("|").split("|")][column] for r in rows[:2]] == ["0.400 [0.35, 0.45]", "-"]


def test_default_rows_take_another_lrp_composite_when_named():
    """``--composite`` swaps only the LRP row's composite; the other defaults and the random order stay."""
    from kdcore.explain import METHODS

    plain = dict(explain_bench.setting_rows("default"))
    swapped = dict(explain_bench.setting_rows("default", "epsilon-plus-flat"))
    assert swapped["lrp"] == {**METHODS["lrp"].defaults, "composite": "epsilon-plus-flat"} != plain["lrp"]
    assert {k: v for k, v in swapped.items() if k != "lrp"} == {k: v for k, v in plain.items() if k != "lrp"}
