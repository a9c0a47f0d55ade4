"""The training loop: repeatable by seed, resumable after an interruption, exporting the best model."""

import json
import math
import threading
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from kdcore.data.augment import AugmentConfig
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import load_train_data
from kdcore.engine.loop import Supervised, TrainConfig, amp_dtype, fit, run_to_end
from kdcore.errors import KDCoreError
from kdcore.models import create_model, load_model
from kdcore.models.card import model_card_text

CFG = TrainConfig(epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.5, seed=1)


@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory):
    return load_train_data(str(tiny_data), 32, tmp_path_factory.mktemp("split") / "split.json")


def _objective(seed=0):
    torch.manual_seed(seed)
    return Supervised(create_model("test_resnet", 4, InputSpec(size=32)))


def _weights(run_dir):
    model, _ = load_model(run_dir / "best")
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_run_writes_metrics_checkpoint_and_best_model(data, tmp_path):
    events = list(fit(_objective(), data, CFG, tmp_path / "r", "test_resnet"))
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 3 and kinds[-1] == "done"
    step = next(e for e in events if e["event"] == "step")
    assert {"loss", "train_accuracy", "images_per_s", "eta_s", "terms"} <= set(step)
    lines = [json.loads(s) for s in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in lines] == [0, 1, 2] and "val_accuracy" in lines[0]
    _, info = load_model(tmp_path / "r" / "best")
    assert info.summary["val_metrics"]["accuracy"] == max(e["val_accuracy"] for e in lines)
    assert info.summary["exported"] == "best" and info.summary["epoch"] == info.summary["best_epoch"]
    last, last_info = load_model(events[-1]["last_dir"])  # the final epoch's weights, whatever validation said
    assert last_info.summary["exported"] == "last" and last_info.summary["epoch"] == 2
    assert last_info.summary["val_metrics"]["accuracy"] == lines[-1]["val_accuracy"]
    final = load_file(str(tmp_path / "r" / "checkpoint.safetensors"))
    assert all(torch.equal(v, final[f"model.student.{k}"]) for k, v in last.state_dict().items())
    assert "final epoch (3 of 3)" in model_card_text(last_info, 1)


def test_same_seed_same_run(data, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, seed=5)
    a = run_to_end(fit(_objective(), data, cfg, tmp_path / "a", "test_resnet"))
    b = run_to_end(fit(_objective(), data, cfg, tmp_path / "b", "test_resnet"))
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]


def test_resume_after_interruption_matches_uninterrupted_run(data, tmp_path):
    run_to_end(fit(_objective(), data, CFG, tmp_path / "full", "test_resnet"))
    stop = threading.Event()
    for e in fit(_objective(), data, CFG, tmp_path / "cut", "test_resnet", stop=stop):
        if e["event"] == "step" and e["epoch"] == 2 and e["step"] == 2:
            stop.set()  # killed mid-epoch: the epoch in progress is lost, nothing else
    meta = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert meta["epoch"] == 1
    with pytest.raises(KDCoreError, match="--resume"):
        run_to_end(fit(_objective(), data, CFG, tmp_path / "cut", "test_resnet"))
    final = run_to_end(fit(_objective(seed=99), data, CFG, tmp_path / "cut", "test_resnet", resume=True))
    assert final["event"] == "done" and len(final["history"]) == 3
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.allclose(full[k], cut[k], atol=1e-6) for k in full)


def test_resume_refuses_a_changed_config(data, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8)
    run_to_end(fit(_objective(), data, cfg, tmp_path / "r", "test_resnet"))
    with pytest.raises(KDCoreError, match="different training config"):
        run_to_end(fit(_objective(), data, TrainConfig(epochs=1, batch_size=16), tmp_path / "r", "test_resnet",
                       resume=True))


def test_augmentation_identity_when_disabled(data):
    from kdcore.data.augment import augment_batch, to_input

    spec = InputSpec(size=32)
    x, theta = augment_batch(data.train.pixels[:4], spec, AugmentConfig(enabled=False), torch.Generator())
    assert theta is None and torch.equal(x, to_input(data.train.pixels[:4], spec))
    y, theta = augment_batch(data.train.pixels[:4], spec, AugmentConfig(), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and theta.shape == (4, 2, 3)


def test_augmentation_replays_from_its_draws(data):
    """Drawn parameters give the image the generator gives: fixed views are the same augmentations, stored."""
    from kdcore.data.augment import augment_batch, draw_params, fixed_views

    spec, pix = InputSpec(size=32), data.train.pixels[:4]
    x, theta = augment_batch(pix, spec, AugmentConfig(), torch.Generator().manual_seed(5))
    u = draw_params(4, torch.Generator().manual_seed(5))
    y, phi = augment_batch(pix, spec, AugmentConfig(), torch.Generator().manual_seed(99), u)
    assert torch.equal(x, y) and torch.equal(theta, phi)
    views = fixed_views(4, 3)
    assert views.shape == (4, 3, 8) and torch.equal(views, fixed_views(4, 3))
    assert not torch.equal(views[:, 0], views[:, 1])


def test_normalisation_round_trips_and_repeats_the_plane(data):
    from kdcore.data.augment import denormalize, normalize, to_input

    spec = InputSpec(size=32, channels=3, mean=0.3, std=0.2)
    x = to_input(data.train.pixels[:4], spec)
    x01 = data.train.pixels[:4].float().unsqueeze(1) / 255
    assert x.shape == (4, 3, 32, 32) and torch.equal(x, normalize(x01, spec))
    assert torch.allclose(denormalize(x, spec), x01, atol=1e-6)


def test_paired_bootstrap_of_identical_and_opposite_predictions():
    import numpy as np

    from kdcore.engine.metrics import paired_bootstrap

    y = np.arange(40) % 4
    same = paired_bootstrap(np.stack([y, y]), np.stack([y, y]), y, 4, n=50)
    assert same["accuracy"] == {"diff": 0.0, "ci95": [0.0, 0.0]}
    wrong = (y + 1) % 4
    d = paired_bootstrap(np.stack([y, y]), np.stack([wrong, wrong]), y, 4, n=50)
    assert d["accuracy"]["diff"] == 1.0 and d["macro_f1"]["ci95"] == [1.0, 1.0]


def test_each_rank_takes_its_share_of_the_batch():
    from kdcore.engine.dist import DistEnv

    assert [DistEnv(r, 2).shard(16) for r in (0, 1)] == [slice(0, 8), slice(8, 16)]
    assert DistEnv().shard(16) == slice(0, 16) and DistEnv().mean(torch.ones(2)).tolist() == [1.0, 1.0]


def test_mixup_blends_pairs_into_soft_targets(data):
    from kdcore.data.augment import mix_batch, to_input

    x, y = to_input(data.train.pixels[:8], InputSpec(size=32)), torch.arange(8) % 4
    mixed, target = mix_batch(x, y, 4, 1.0, torch.Generator().manual_seed(3))
    again, _ = mix_batch(x, y, 4, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(mixed, again) and target.shape == (8, 4)
    assert torch.allclose(target.sum(1), torch.ones(8)) and (target >= 0).all()
    lam = target[torch.arange(8), y].min()  # each row keeps its own label's weight (>= lam)
    assert 0.05 < lam < 0.95
    partner = (mixed - lam * x) / (1 - lam)  # the rest is another image of the batch
    assert any(torch.allclose(partner[0], x[j], atol=1e-4) for j in range(8))


def test_mixup_supervised_run_trains(data, tmp_path):
    final = run_to_end(fit(_objective(), data, TrainConfig(epochs=1, batch_size=8, mixup=0.4), tmp_path / "m",
                           "test_resnet"))
    assert final["event"] == "done" and 0 < final["history"][0]["train_loss"] < 10


def test_data_pack_round_trip_trains_the_same(data, tiny_data, tmp_path):
    """A pack is the same pixels, labels, classes and split; training on it gives the same first epoch."""
    from kdcore.cli import main
    from kdcore.data.pack import load_pack

    pack = tmp_path / "tiny.safetensors"
    assert main(["pack", str(tiny_data), "--size", "32", "--split", data.split_path, "--out", str(pack)]) == 0
    packed = load_train_data(str(pack), 32)
    for side in ("train", "val"):
        assert torch.equal(getattr(packed, side).pixels, getattr(data, side).pixels)
        assert torch.equal(getattr(packed, side).labels, getattr(data, side).labels)
    assert packed.class_names == data.class_names
    one = TrainConfig(epochs=1, batch_size=8, seed=1)
    a = run_to_end(fit(_objective(), data, one, tmp_path / "a", "test_resnet"))
    b = run_to_end(fit(_objective(), packed, one, tmp_path / "b", "test_resnet"))
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    with pytest.raises(KDCoreError, match="64 px"):
        load_pack(pack, 64)
    with pytest.raises(KDCoreError, match="split"):
        load_pack(pack, 32, tmp_path / "other-split.json")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(KDCoreError, match="not a kdcore data pack"):
        load_pack(tmp_path / "plain.safetensors", 32)
    argv = ["pack", str(tiny_data), "--size", "32", "--split", data.split_path, "--out", str(tmp_path / "x.npz")]
    assert main(argv) == 2


def test_ema_is_what_is_validated_exported_and_resumed(data, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0.5, seed=1, ema=0.9)
    objective = _objective()
    full = run_to_end(fit(objective, data, cfg, tmp_path / "full", "test_resnet"))
    raw = {k: v for k, v in objective.student.state_dict().items() if v.is_floating_point()}
    exported = _weights(tmp_path / "full")
    assert any(not torch.equal(exported[k], raw[k]) for k in raw)  # the average, not the last step's weights
    _, info = load_model(tmp_path / "full" / "best")
    assert info.summary["ema"] == 0.9
    assert info.summary["val_metrics"]["accuracy"] == full["best"]["accuracy"]
    stop = threading.Event()
    for e in fit(_objective(), data, cfg, tmp_path / "cut", "test_resnet", stop=stop):
        if e["event"] == "step" and e["epoch"] == 2 and e["step"] == 1:
            stop.set()
    resumed = run_to_end(fit(_objective(), data, cfg, tmp_path / "cut", "test_resnet", resume=True))
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in full["history"]]
    assert resumed["history"][-1]["val_loss"] == pytest.approx(full["history"][-1]["val_loss"], abs=1e-6)


def _losses(run_dir):
    return [json.loads(s)["train_loss"] for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_bf16_autocast_trains_on_cpu(data, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_epochs=0.5, seed=1, amp="bf16")
    final = run_to_end(fit(_objective(), data, cfg, tmp_path / "r", "test_resnet"))
    losses = _losses(tmp_path / "r")
    assert final["event"] == "done" and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    with pytest.raises(KDCoreError, match="amp"):
        TrainConfig(amp="fp8")


def test_auto_amp_is_bf16_only_where_the_cpu_has_it(data, tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    assert amp_dtype("bf16", cpu) is torch.bfloat16 and amp_dtype(None, cpu) is None
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": False})
    assert amp_dtype("auto", cpu) is None  # bf16 emulated: float32
    cfg = TrainConfig(epochs=1, batch_size=8, seed=1, amp="auto")
    run_to_end(fit(_objective(), data, cfg, tmp_path / "fp32", "test_resnet"))
    saved = json.loads((tmp_path / "fp32" / "config.json").read_text())
    assert saved["train"]["amp"] == "auto" and saved["autocast"] == "float32"
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flag=flag: {flag: True})
        assert amp_dtype("auto", cpu) is torch.bfloat16
    run_to_end(fit(_objective(), data, cfg, tmp_path / "bf16", "test_resnet"))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["autocast"] == "bfloat16"
    assert load_model(tmp_path / "bf16" / "last")[1].summary["autocast"] == "bfloat16"  # in the model card


def test_host_sync_every_n_steps_keeps_the_numbers(data, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, seed=1)
    every = [e for e in fit(_objective(), data, cfg, tmp_path / "a", "test_resnet") if e["event"] == "step"]
    sparse = [e for e in fit(_objective(), data, replace(cfg, log_every=3), tmp_path / "b", "test_resnet")
              if e["event"] == "step"]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")  # the epoch sums: same values, same order
    steps = every[0]["steps"]
    for i, e in enumerate(sparse):
        synced = e["step"] in (1, steps) or e["step"] % 3 == 0
        assert e["loss"] == (every[i]["loss"] if synced else sparse[i - 1]["loss"])  # repeated until the next sync
    with pytest.raises(KDCoreError, match="log_every"):
        TrainConfig(log_every=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile of even test_resnet takes ~2 min on a "
                    "2-core CPU (125 s measured), too long for the suite; runs where CUDA is present")
def test_compiled_objective_trains(data, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, seed=1, compile=True)
    final = run_to_end(fit(_objective(), data, cfg, tmp_path / "r", "test_resnet"))
    assert final["event"] == "done" and math.isfinite(final["history"][0]["train_loss"])


def test_ema_decay_warms_up_so_a_short_run_forgets_its_initial_weights(data, tmp_path):
    """At the first step the average is the stepped weights themselves (decay 0), not 99.99% the initial ones."""
    cfg = TrainConfig(epochs=1, batch_size=8, lr=3e-3, warmup_epochs=0.5, seed=1, ema=0.9999, max_images=8)
    objective = _objective()
    run_to_end(fit(objective, data, cfg, tmp_path / "r", "test_resnet"))
    raw = {k: v for k, v in objective.student.state_dict().items() if v.is_floating_point()}
    exported = _weights(tmp_path / "r")
    init = _objective().student.state_dict()
    assert all(torch.allclose(exported[k], raw[k], atol=1e-6) for k in raw)
    assert any(not torch.allclose(raw[k], init[k]) for k in raw)
