"""The distiller objective, the teacher cache, run configs, resume and the ``distill`` CLI on tiny data."""

import dataclasses
import json
import shutil
import threading

import pytest
import torch
from safetensors.torch import load_file

from kdcore.cli import main
from kdcore.data.augment import AugmentConfig, adapt_input, augment_batch, draw_params, fixed_views, random_affine
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import load_train_data
from kdcore.distill import (
    LOSSES,
    PRESETS,
    DistillConfig,
    Distiller,
    RunConfig,
    config_from_options,
    make_config,
    parse_loss,
    register_loss,
    run,
)
from kdcore.distill.teacher_cache import TeacherCache, Views, build_cache, cached_maps, teacher_maps
from kdcore.engine.loop import TrainConfig, run_to_end
from kdcore.errors import KDCoreError
from kdcore.models import create_model, load_model

SPEC = InputSpec(size=32)
ALL_TERMS = {"ce": 1.0, "kd": 1.0, "feat": 1.0, "sem": 1.0, "rel": 1.0}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return tmp_path_factory.mktemp("split") / "split.json"


@pytest.fixture(scope="module")
def data(tiny_data, split):
    return load_train_data(str(tiny_data), 32, split)


def _built(gen):
    """The value a generator such as ``build_cache`` returns, after its events."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _cfg(tiny_model_dir, loss=None, epochs=2, **distill) -> RunConfig:
    return RunConfig(teacher=str(tiny_model_dir), student="test_resnet", size=32,
                     train=TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, warmup_epochs=0.5, seed=3),
                     distill=DistillConfig(loss=loss or ALL_TERMS, **distill))


def test_distiller_keeps_teacher_frozen_and_trains_student_and_projector(tiny_model_dir, data):
    teacher, info = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = create_model("test_resnet", 4, SPEC)
    d = Distiller(student, teacher, SPEC, info.spec, DistillConfig(loss=ALL_TERMS, teacher_cache=False), 0.1)
    d.train()
    assert d.student.training and not d.teacher.training
    assert all(not p.requires_grad for p in d.teacher.parameters())
    x, y = torch.randn(4, 1, 32, 32), data.train.labels[:4]
    logits, terms = d(x, y, None, torch.arange(4))
    assert logits.shape == (4, 4) and list(terms) == list(ALL_TERMS)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in d.projector.parameters())
    assert all(p.grad is None for p in d.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats untouched


def test_logit_terms_are_float32_under_bf16_autocast(tiny_model_dir, data):
    teacher, info = load_model(tiny_model_dir)
    loss = {"ce": 1.0, "kd": 1.0, "dkd": 1.0, "dist": 1.0}
    d = Distiller(create_model("test_resnet", 4, SPEC), teacher, SPEC, info.spec,
                  DistillConfig(loss=loss, teacher_cache=False))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, terms = d(torch.randn(4, 1, 32, 32), data.train.labels[:4], None, torch.arange(4))
    assert logits.dtype == torch.float32 and all(t.dtype == torch.float32 for t in terms.values())


def test_config_round_trip_and_precedence(tmp_path):
    cfg = make_config("short", overrides={"teacher": "t", "train": {"seed": 7},
                                          "distill": {"loss": {"ce": 1, "sem": 0.5}, "sem_map": "gradcam"}})
    assert cfg.size == PRESETS["short"]["size"] and cfg.train.seed == 7
    assert cfg.train.epochs == make_config("short").train.epochs
    assert cfg.distill.weights == {"ce": 1.0, "sem": 0.5}  # the loss is replaced as a whole
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    again = make_config(file=tmp_path / "c.json")
    assert again == cfg and RunConfig.from_dict(json.loads(json.dumps(again.to_dict()))) == cfg
    assert parse_loss("ce=1, kd=0.5,feat") == {"ce": 1.0, "kd": 0.5, "feat": 1.0}
    with pytest.raises(KDCoreError, match="unknown loss"):
        DistillConfig(loss={"ce": 1, "foo": 1})
    with pytest.raises(KDCoreError, match="sem map"):
        DistillConfig(sem_map="saliency")
    with pytest.raises(KDCoreError, match="preset"):
        make_config("long")


def test_flat_options_build_the_same_config_as_nested_overrides():
    cfg = config_from_options("short", teacher="t", student=None, epochs=2, lr=None, loss={"ce": 1, "sem": 1},
                              sem_map="gradcam", teacher_cache=False)
    assert cfg == make_config("short", overrides={"teacher": "t", "train": {"epochs": 2}, "distill": {
        "loss": {"ce": 1, "sem": 1}, "sem_map": "gradcam", "teacher_cache": False}})
    with pytest.raises(KDCoreError, match="unknown run option"):
        config_from_options(epoch=2)


def test_a_registered_term_is_weighted_and_summed(tiny_model_dir, data):
    @register_loss("l1", "mean |z_s - z_t|", ("logits",), lambda c: "logits")
    def _l1(d, s):
        return (s.logits - s.teacher["logits"]).abs().mean()

    try:
        with pytest.raises(ValueError, match="registered already"):
            register_loss("l1", "again")(_l1)
        cfg = DistillConfig(loss={"l1": 0.5, "ce": 1}, teacher_cache=False)
        assert cfg.describe() == "1*ce + 0.5*l1(logits)" and cfg.teacher_needs == {"logits"}
        teacher, info = load_model(tiny_model_dir)
        d = Distiller(create_model("test_resnet", 4, SPEC), teacher, SPEC, info.spec, cfg)
        x, y = torch.randn(4, 1, 32, 32), data.train.labels[:4]
        logits, terms = d(x, y, None, torch.arange(4))
        with torch.no_grad():
            t = teacher(adapt_input(x, SPEC, info.spec))
        assert list(terms) == ["ce", "l1"] and torch.allclose(terms["l1"], 0.5 * (logits - t).abs().mean())
    finally:
        del LOSSES["l1"]


def test_teacher_cache_reused_and_warped(tiny_model_dir, data):
    teacher, info = load_model(tiny_model_dir)
    pix, lab = data.train.pixels[:10], data.train.labels[:10]
    events = []
    gen = build_cache(teacher, info.spec, pix, lab, "lrp", map_size=16, batch=4)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        cache = stop.value
    assert [e["done"] for e in events] == [4, 8, 10] and not events[0]["cached"]
    assert cache.logits.shape == (10, 4) and cache.maps.shape == (10, 16, 16)
    again = list(build_cache(teacher, info.spec, pix, lab, "lrp", map_size=16))
    assert again[0]["cached"]
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(10, 2, 3)
    assert torch.allclose(cached_maps(cache.maps, identity), cache.maps, atol=1e-5)
    theta = random_affine(draw_params(10, torch.Generator().manual_seed(0)), AugmentConfig())
    assert cached_maps(cache.maps, theta).shape == (10, 16, 16)
    x = (pix[:2].float() / 255 - info.spec.mean).div(info.spec.std).unsqueeze(1)
    assert torch.allclose(teacher_maps(teacher, x, lab[:2], "lrp", 16), cache.maps[:2], atol=1e-5)


def test_kd_takes_the_cached_logits_even_when_feat_runs_the_teacher(tiny_model_dir, data):
    """kd's targets are the same in every configuration that has a cache: the ablation compares like with like."""
    teacher, info = load_model(tiny_model_dir)
    cache = TeacherCache(logits=torch.randn(10, 4))
    cfg = DistillConfig(loss={"kd": 1.0, "feat": 1.0})
    d = Distiller(create_model("test_resnet", 4, SPEC), teacher, SPEC, info.spec, cfg, cache=cache)
    x, y, index = torch.randn(4, 1, 32, 32), data.train.labels[:4], torch.tensor([7, 2, 9, 0])
    out = d.teacher_outputs(x, y, None, index)
    assert d.teacher_forward and torch.equal(out["logits"], cache.logits[index]) and out["features"].ndim == 4
    uncached = Distiller(d.student, teacher, SPEC, info.spec, DistillConfig(loss=cfg.loss, teacher_cache=False))
    with torch.no_grad():
        per_step = teacher(adapt_input(x, SPEC, info.spec))
    assert torch.allclose(uncached.teacher_outputs(x, y, None, index)["logits"], per_step, atol=1e-5)


def test_view_cache_equals_the_per_step_teacher_on_the_same_views(tiny_model_dir, data):
    """With fixed views the cached logits, features and maps are the per-step teacher's, and no teacher runs."""
    teacher, info = load_model(tiny_model_dir)
    pix, lab = data.train.pixels[:5], data.train.labels[:5]
    assert info.spec.size == SPEC.size  # at the student's resolution the per-step teacher sees the same image
    views = Views(fixed_views(5, 3), AugmentConfig())
    cache = _built(build_cache(teacher, info.spec, pix, lab, "lrp", map_size=16, batch=4, features=True, views=views))
    assert cache.logits.shape == (15, 4) and cache.maps.shape == (15, 16, 16) and cache.features.dtype == torch.half
    cfg = DistillConfig(loss={"kd": 1.0, "feat": 1.0, "sem": 1.0}, map_size=16)
    d = Distiller(create_model("test_resnet", 4, SPEC), teacher, SPEC, info.spec, cfg, cache=cache)
    per_step = Distiller(d.student, teacher, SPEC, info.spec, dataclasses.replace(cfg, teacher_cache=False))
    assert not d.teacher_forward and per_step.teacher_forward
    img, v = torch.tensor([4, 0, 2, 2]), torch.tensor([1, 2, 0, 2])
    x, theta = augment_batch(pix[img], SPEC, AugmentConfig(), torch.Generator(), views.params[img, v])
    cached = d.teacher_outputs(x, lab[img], theta, img * 3 + v)
    exact = per_step.teacher_outputs(x, lab[img], theta, None)
    assert torch.allclose(cached["logits"], exact["logits"], atol=1e-4)
    assert torch.allclose(cached["features"], exact["features"], atol=1e-2, rtol=1e-2)  # stored as float16
    assert torch.allclose(cached["map"], exact["map"], atol=1e-5)
    with pytest.raises(KDCoreError, match="only for fixed views"):
        _built(build_cache(teacher, info.spec, pix, lab, None, features=True))


def test_views_train_from_one_cache_and_refuse_mixup(tiny_model_dir, tiny_data, split, tmp_path):
    cfg = _cfg(tiny_model_dir, loss={"ce": 1.0, "kd": 1.0, "feat": 1.0, "sem": 1.0}, epochs=1, sem_map="gradcam")
    cfg.train = dataclasses.replace(cfg.train, views=2)
    events = list(run(cfg, str(tiny_data), tmp_path / "r", split=split))
    assert events[0]["event"] == "cache" and events[0]["total"] == 2 * len(load_train_data(str(tiny_data), 32,
                                                                                            split).train)
    assert events[-1]["event"] == "done"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["views"] == 2
    with pytest.raises(KDCoreError, match="views and mixup"):
        TrainConfig(views=2, mixup=0.2)


def test_export_holds_only_the_student(tiny_model_dir, tiny_data, split, tmp_path):
    cfg = _cfg(tiny_model_dir, epochs=1)
    final = run_to_end(run(cfg, str(tiny_data), tmp_path / "r", split=split))
    assert final["event"] == "done"
    keys = set(load_file(str(tmp_path / "r" / "best" / "model.safetensors")))
    student_keys = set(create_model("test_resnet", 4, SPEC).state_dict())
    assert keys == student_keys and not any(k.startswith(("projector", "teacher")) for k in keys)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert RunConfig.from_dict(saved) == cfg  # the run's config.json is a valid --config
    ckpt = load_file(str(tmp_path / "r" / "checkpoint.safetensors"))
    assert any(k.startswith("model.projector.") for k in ckpt) and not any(k.startswith("model.teacher.") for k in ckpt)
    _, info = load_model(tmp_path / "r" / "best")
    assert "kd" in info.summary["loss"] and info.summary["teacher"] == str(tiny_model_dir)


def test_resume_after_stop_matches_uninterrupted_run(tiny_model_dir, tiny_data, split, tmp_path):
    cfg = _cfg(tiny_model_dir, epochs=2)
    run_to_end(run(cfg, str(tiny_data), tmp_path / "full", split=split))
    stop = threading.Event()
    for e in run(cfg, str(tiny_data), tmp_path / "cut", stop=stop, split=split):
        if e["event"] == "step" and e["epoch"] == 1 and e["step"] == 2:
            stop.set()
    assert e["event"] == "stopped"
    other = _cfg(tiny_model_dir, epochs=2, feat_distance="l2")
    with pytest.raises(KDCoreError, match="different distill"):
        run_to_end(run(other, str(tiny_data), tmp_path / "cut", resume=True, split=split))
    final = run_to_end(run(cfg, str(tiny_data), tmp_path / "cut", resume=True, split=split))
    assert final["event"] == "done" and len(final["history"]) == 2
    full = load_file(str(tmp_path / "full" / "checkpoint.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "checkpoint.safetensors"))
    assert full.keys() == cut.keys()
    assert all(torch.allclose(full[k], cut[k], atol=1e-6) for k in full)


def test_student_alone_and_per_step_teacher(tiny_model_dir, tiny_data, split, tmp_path):
    cfg = dataclasses.replace(_cfg(tiny_model_dir, {"ce": 1}, epochs=1), student="resnet10t_w8")
    alone = run_to_end(run(cfg, str(tiny_data), tmp_path / "a", split=split))
    _, info = load_model(alone["best_dir"])
    assert info.summary["objective"] == "supervised (student alone)"
    assert (info.arch, info.summary["arch_variant"]) == ("resnet10t", "resnet10t_w8")  # the width variant is kept
    per_step = _cfg(tiny_model_dir, {"ce": 1, "kd": 1, "sem": 1}, epochs=1, sem_map="gradcam", teacher_cache=False)
    final = run_to_end(run(per_step, str(tiny_data), tmp_path / "p", split=split))
    assert final["event"] == "done" and set(final["history"][0]) >= {"train_kd", "train_sem"}


def test_cli_short_preset(tiny_model_dir, tiny_data, split, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(tiny_model_dir), "--data", str(tiny_data), "--preset", "short",
            "--size", "32", "--epochs", "1", "--split", str(split), "--out", str(out)]
    assert main(argv) == 0
    assert (out / "best" / "model.safetensors").is_file()
    assert "teacher cache" in capsys.readouterr().out
    assert main(argv) == 2  # the folder holds a run: one-line error, no traceback
    assert main([*argv, "--resume"]) == 0
    assert main([*argv[:-2], "--out", str(tmp_path / "x"), "--loss", "ce=1,bogus=2"]) == 2


def test_sem_refuses_a_student_without_second_derivative(tiny_model_dir):
    teacher, info = load_model(tiny_model_dir)
    student = create_model("mobilenetv3_small_050", 4, SPEC)  # Hardsigmoid: no double backward in PyTorch
    with pytest.raises(KDCoreError, match="cannot train this student"):  # gradient x input differentiates it twice
        Distiller(student, teacher, SPEC, info.spec, DistillConfig(loss={"ce": 1, "sem": 1}, sem_map="lrp0"))


def test_init_starts_the_student_from_a_model_folder(tiny_model_dir, tiny_data, split, tmp_path):
    """With lr 0 the exported student keeps the init's weights; a wrong architecture is refused in one line."""
    cfg = _cfg(tiny_model_dir, {"ce": 1, "kd": 1}, epochs=1)
    cfg.init, cfg.train.lr = str(tiny_model_dir), 0.0
    final = run_to_end(run(cfg, str(tiny_data), tmp_path / "i", split=split))
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    out = load_file(str(tmp_path / "i" / "best" / "model.safetensors"))
    assert final["event"] == "done" and not any(k.startswith("projector") for k in out)
    assert all(torch.equal(out[k], init[k]) for k in init if "weight" in k and init[k].ndim > 1)
    other = _cfg(tiny_model_dir, {"ce": 1}, epochs=1)
    other.student, other.init = "resnet10t_w16", str(tiny_model_dir)
    with pytest.raises(KDCoreError, match="is a test_resnet"):
        run_to_end(run(other, str(tiny_data), tmp_path / "w", split=split))
    other.student, other.size = "test_resnet", 48
    with pytest.raises(KDCoreError, match="at 32 px differ from the run's"):
        run_to_end(run(other, str(tiny_data), tmp_path / "s", split=split))


def test_mixup_needs_per_step_teacher_and_trains_with_soft_targets(tiny_model_dir, tiny_data, split, tmp_path):
    cfg = _cfg(tiny_model_dir, {"ce": 1, "kd": 1}, epochs=1)
    cfg.train.mixup = 0.4
    with pytest.raises(KDCoreError, match="no-teacher-cache"):
        run_to_end(run(cfg, str(tiny_data), tmp_path / "c", split=split))
    sem = _cfg(tiny_model_dir, {"ce": 1, "sem": 1}, epochs=1, teacher_cache=False)
    sem.train.mixup = 0.4
    with pytest.raises(KDCoreError, match="no single target class"):
        run_to_end(run(sem, str(tiny_data), tmp_path / "s", split=split))
    cfg.distill.teacher_cache = False
    runs = [run_to_end(run(cfg, str(tiny_data), tmp_path / f"m{i}", split=split)) for i in range(2)]
    first, again = (r["history"][0] for r in runs)
    assert runs[0]["event"] == "done" and first["train_kd"] > 0
    assert (first["train_loss"], first["val_accuracy"]) == (again["train_loss"], again["val_accuracy"])  # seeded


@pytest.mark.slow
def test_short_preset_bench_pairs_final_epochs_at_equal_epochs_and_wall_clock(tiny_model_dir, tiny_data, split,
                                                                              tmp_path):
    from bench import short_preset

    out = tmp_path / "sp"
    override = json.dumps({"size": 32, "train": {"epochs": 1, "batch_size": 8, "max_images": 8}})
    argv = ["--teacher", str(tiny_model_dir), "--data", str(tiny_data), "--split", str(split), "--seeds", "0,1",
            "--override", override, "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert short_preset.main(argv) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["runs"]) == {f"{v}/{s}" for v in short_preset.VARIANTS for s in (0, 1)}
    assert res["wall_epochs"] >= 1 and res["runs"]["alone@wall/0"]["epochs"] == res["wall_epochs"]
    kd = res["runs"]["kd/0"]
    assert kd["accuracy"] == pytest.approx(kd["curve"][-1]) and kd["best_accuracy"] == max(kd["curve"])
    assert set(res["comparisons"]) == {"kd - alone", "kd - alone@wall"}
    assert res["comparisons"]["kd - alone"]["over_seeds"]["accuracy"]["n"] == 2
    assert "final epoch" in out.with_suffix(".md").read_text()
    # another teacher: KD runs again, the student alone is taken from the first report, not retrained
    other = tmp_path / "teacher2"
    shutil.copytree(tiny_model_dir, other)
    argv2 = [*argv[:1], str(other), *argv[2:-4], "--runs", str(tmp_path / "runs2"), "--out", str(tmp_path / "sp2"),
             "--reuse", str(out.with_suffix(".json"))]
    assert short_preset.main(argv2) == 0
    res2 = json.loads((tmp_path / "sp2.json").read_text())
    assert res2["runs"]["alone/0"] == res["runs"]["alone/0"] and res2["wall_epochs"] == res["wall_epochs"]
    assert res2["runs"]["kd/0"]["config"]["teacher"] == str(other)
    assert "teacher" not in res2["runs"]["alone/1"]["config"]
    assert not (tmp_path / "runs2" / "alone").exists() and (tmp_path / "runs2" / "kd" / "seed1").is_dir()


def test_tiny_student_bench_runs_each_recipe_once_and_reads_it_back(tiny_model_dir, tiny_data, split, tmp_path):
    from bench import tiny_student

    base = tmp_path / "student.json"
    base.write_text(json.dumps(_cfg(tiny_model_dir, loss={"ce": 1.0, "kd": 1.0}).to_dict()))
    out, runs = tmp_path / "tiny", tmp_path / "runs"
    argv = ["--config", str(base), "--data", str(tiny_data), "--split", str(split), "--runs", str(runs),
            "--recipes", "tiny-w8-192-ema,tiny-w12c64-192-ema-s2", "--out", str(out),
            "--override", json.dumps({"size": 32, "train": {"epochs": 2, "batch_size": 8}})]
    assert tiny_student.main(argv) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    ema, s2 = res["runs"]["tiny-w8-192-ema"], res["runs"]["tiny-w12c64-192-ema-s2"]
    saved = json.loads((runs / "tiny-w12c64-192-ema-s2" / "config.json").read_text())
    assert (saved["student"], saved["size"], saved["train"]["ema"], saved["train"]["seed"]) == (
        "resnet10t_w12c64", 32, 0.998, 2)  # the recipe, then the override over it
    assert ema["params"] == 79_798 and s2["params"] > ema["params"] and s2["mflops"] > ema["mflops"]
    assert ema["accuracy"] == pytest.approx(ema["curve"][-1]) and ema["best_accuracy"] == max(ema["curve"])
    log = (runs / "tiny-w8-192-ema" / "metrics.jsonl").read_text()
    assert tiny_student.main(argv) == 0  # finished runs are read back, not trained again
    assert (runs / "tiny-w8-192-ema" / "metrics.jsonl").read_text() == log
    read_back = json.loads(out.with_suffix(".json").read_text())["runs"]["tiny-w8-192-ema"]
    assert read_back["accuracy"] == ema["accuracy"]
    assert "final epoch" in out.with_suffix(".md").read_text()
    argv[argv.index("--recipes") + 1] = "tiny-w12c64-192-ema-lr15"
    assert tiny_student.main(argv) == 0  # a new recipe adds its row; the others are kept from the report
    res3 = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert list(res3) == ["tiny-w8-192-ema", "tiny-w12c64-192-ema-s2", "tiny-w12c64-192-ema-lr15"]
    assert res3["tiny-w8-192-ema"] == read_back and res3["tiny-w12c64-192-ema-lr15"]["recipe"]["lr"] == 1.5e-2
    assert json.loads((runs / "tiny-w12c64-192-ema-lr15" / "config.json").read_text())["train"]["lr"] == 1.5e-2
