"""The model folder format: save/load round trip, timm Hub-layout compatibility, fp16 weights, bad folders."""

import json

import pytest
import timm
import torch
from huggingface_hub import ModelCard

from kdcore.data.imageio import InputSpec
from kdcore.errors import KDCoreError
from kdcore.models import ModelInfo, create_model, load_model, save_model
from tests.helpers import CLASSES


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    spec = InputSpec(size=32, mean=0.2, std=0.3)
    model = create_model("test_resnet", 4, spec).eval()
    info = ModelInfo("test_resnet", CLASSES, spec, {"val_metrics": {"accuracy": 0.5, "macro_f1": 0.4}})
    return model, save_model(model, tmp_path / "m", info), spec


def test_round_trip_identical_outputs_and_info(saved):
    model, folder, spec = saved
    loaded, info = load_model(folder)
    x = torch.randn(3, 1, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert info.class_names == CLASSES and info.spec == spec and info.arch == "test_resnet"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["pretrained_cfg"]["input_size"] == [1, 32, 32] and cfg["label_names"] == CLASSES
    assert cfg["pretrained_cfg"]["hf_hub_id"] is None  # no claim of ImageNet weights
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_timm_loads_the_folder_as_a_hub_model(saved):
    model, folder, _ = saved
    via_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(model(x), via_timm(x))


def test_card_parses_with_metrics(saved):
    card = ModelCard.load(saved[1] / "README.md")
    assert card.data.library_name == "timm"
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == {"accuracy": 0.5, "macro_f1": 0.4}
    assert "Not a medical device" in card.text


def test_half_weights_keep_predictions(tmp_path, saved):
    model, _, spec = saved
    folder = save_model(model, tmp_path / "h", ModelInfo("test_resnet", CLASSES, spec), half=True)
    loaded, _ = load_model(folder)
    x = torch.randn(16, 1, 32, 32)
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.equal(model(x).argmax(1), loaded(x).argmax(1))


def test_bad_model_folders(tmp_path, saved):
    with pytest.raises(KDCoreError, match="no such model folder"):
        load_model(tmp_path / "missing")
    folder = saved[1]
    (folder / "model.safetensors").unlink()
    with pytest.raises(KDCoreError, match=r"no model\.safetensors"):
        load_model(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDCoreError, match=r"no config\.json"):
        load_model(tmp_path / "empty")


def test_weights_of_another_architecture_are_refused(tmp_path, saved):
    folder = saved[1]
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architecture"] = "resnet10t"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KDCoreError, match="do not fit"):
        load_model(folder)


def test_width_variant_is_rebuilt_by_timm_from_its_config(tmp_path):
    from kdcore.models import VARIANTS

    spec = InputSpec(size=32)
    model = create_model("resnet10t_w16", 4, spec).eval()
    folder = save_model(model, tmp_path / "v", ModelInfo("resnet10t_w16", CLASSES, spec))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == VARIANTS["resnet10t_w16"][0] and cfg["model_args"]["channels"] == [16, 32, 64, 128]
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), load_model(folder)[0](x))
    assert torch.allclose(model(x), timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x))


def test_bench_writes_measured_figures_into_the_card_and_keeps_fp16(tmp_path, saved):
    from safetensors.torch import load_file

    from bench import models as bench_models

    model, _, spec = saved
    folder = save_model(model, tmp_path / "student", ModelInfo("test_resnet", CLASSES, spec,
                                                               {"val_metrics": {"accuracy": 0.5}}), half=True)
    before = load_file(str(folder / "model.safetensors"))
    row = {"params": 1000, "params_ratio": 0.04, "flops": 2e6, "latency_ms_batch1_onnxruntime": 0.73,
           "latency_ratio_onnxruntime": 0.147, "latency_ms_batch1": 3.47, "latency_ratio": 0.25, "roc_auc": 0.999}
    bench_models.write_card(str(folder), *load_model(folder), row, "python -m bench.models --write-cards")
    after = load_file(str(folder / "model.safetensors"))
    assert all(after[k].dtype == torch.float16 and torch.equal(after[k], v)
               for k, v in before.items() if v.is_floating_point())
    card = ModelCard.load(folder / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"accuracy": 0.5}
    assert "## Size and speed" in card.text and "| latency_vs_teacher_onnxruntime | 0.147 |" in card.text
    assert "| roc_auc | 0.999 |" in card.text and "| params | 1,000 |" in card.text
    assert "Measured by `python -m bench.models --write-cards` (" in card.text
    assert card.text.startswith("# student\n")  # the folder's name, as before


@pytest.mark.parametrize("name", ["teacher", "student", "student-tiny"])
def test_bundled_models_are_package_data(name):
    from kdcore.models import resolve_model_path
    from kdcore.paths import bundled_model

    folder = resolve_model_path(name)
    assert folder == bundled_model(name) and folder.parent.parent.parent.name == "kdcore"
    model, info = load_model(name)
    assert sorted(info.class_names) == sorted(CLASSES) and info.path == str(folder) and not model.training


def test_bench_scores_each_model_on_the_split_it_was_trained_with(tmp_path):
    from bench.models import trained_split
    from kdcore.paths import bundled

    first, v2 = "brain-tumor-mri-train-10d4276d.json", "brain-tumor-mri-train-10d4276d-v2.json"
    assert load_model("student")[1].summary["split"] == v2  # the bundled models: trained on the v2 split
    for name in (first, v2):  # a model trained on the first split is scored on the first split, never on v2
        info = ModelInfo("resnet10t", CLASSES, InputSpec(), {"split": name})
        assert trained_split(info, tmp_path / "d.json") == bundled("splits", name)
    unknown = ModelInfo("resnet10t", CLASSES, InputSpec(), {"split": "someone-elses.json"})
    assert trained_split(unknown, tmp_path / "d.json") == tmp_path / "d.json"


@pytest.mark.parametrize("arch", ["mobilenetv2_035", "lcnet_035", "mnasnet_050"])
def test_efficientnet_family_classifier_range_does_not_grow_with_fewer_classes(arch):
    """timm's own init draws these heads from U(+-1/sqrt(num_classes)); kdcore's is fan-in, as for a ResNet."""
    spec = InputSpec(size=32)
    w4, w1000 = (create_model(arch, n, spec).get_classifier().weight.detach() for n in (4, 1000))
    assert max(w4.abs().max(), w1000.abs().max()) <= 1 / w4.shape[1] ** 0.5
    assert w4.std().item() == pytest.approx(w1000.std().item(), rel=0.1)
    timms = timm.create_model(arch, num_classes=4, in_chans=1).get_classifier().weight.detach()
    assert w4.std() < 0.1 * timms.std()


def test_other_models_keep_timms_init_draws():
    spec = InputSpec(size=32)
    torch.manual_seed(3)
    ours = create_model("resnet10t_w8", 4, spec)
    torch.manual_seed(3)
    theirs = timm.create_model("resnet10t", num_classes=4, in_chans=1, channels=(8, 16, 32, 64), stem_width=8)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
