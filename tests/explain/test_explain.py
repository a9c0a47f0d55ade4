"""The explanation API: Grad-CAM vs captum, differentiable student maps, per-class maps, rendering, CLI."""

from functools import partial

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from kdcore.cli import main
from kdcore.errors import KDCoreError
from kdcore.explain import METHODS, class_maps, explain, render_overlay, student_map
from kdcore.explain.gradcam import gradcam_layer, upsample_cam


def tiny(arch: str = "test_resnet", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4, in_chans=1).to(dtype)
    for m in model.modules():  # non-trivial BatchNorm, so every parameter group matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_explain_shapes_and_targets(method):
    model, x = tiny(), torch.randn(3, 1, 64, 48)
    predicted = explain(model, x, None, method)
    assert predicted.shape == (3, 64, 48) and not predicted.requires_grad
    with torch.no_grad():
        top = model(x).argmax(1)
    assert torch.equal(explain(model, x, top, method), predicted)
    assert torch.equal(explain(model, x, 2, method), explain(model, x, torch.tensor([2, 2, 2]), method))
    per_class = class_maps(model, x, method)  # at input size; on a ResNet both Grad-CAMs weigh the same layer
    assert per_class.shape == (3, 4, 64, 48) and not per_class.requires_grad
    assert torch.allclose(per_class[:, 2], explain(model, x, 2, method), atol=1e-6)
    assert class_maps(model, x, method, (8, 6)).shape == (3, 4, 8, 6)
    with pytest.raises(KDCoreError):
        explain(model, x, 7, method)


def test_unknown_method_is_a_clear_error():
    model, x = tiny(), torch.randn(1, 1, 32, 32)
    for call in (explain, student_map, class_maps):
        with pytest.raises(KDCoreError, match="choose from lrp, gradcam"):
            call(model, x, method="shap")


#: arch -> the layer that outputs ``forward_features`` (timm's last feature stage, but for EfficientNet's head conv)
PRE_POOLING = {"test_resnet": "layer4", "mobilenetv3_small_050": "blocks", "test_efficientnet": "bn2"}


@pytest.mark.parametrize("arch", list(PRE_POOLING))
def test_gradcam_equals_captum(arch):
    """Both Grad-CAMs: :func:`explain` at timm's last feature stage (upsampled to the input) and
    :func:`class_maps` at the pre-pooling map, every class from one backbone pass."""
    from captum.attr import LayerGradCam

    model, x, target = tiny(arch), torch.randn(2, 1, 96, 96), torch.tensor([0, 3])
    reference = LayerGradCam(model, gradcam_layer(model)).attribute(x, target=target, relu_attributions=True).detach()
    reference = upsample_cam(reference[:, 0], (96, 96))
    assert torch.allclose(explain(model, x, target, "gradcam"), reference, atol=1e-6 * float(reference.abs().max()))
    layer = LayerGradCam(model, model.get_submodule(PRE_POOLING[arch]))
    per_class = [layer.attribute(x, target=k, relu_attributions=True).detach()[:, 0] for k in range(4)]
    reference = torch.stack(per_class, 1)
    ours = class_maps(model, x, "gradcam", tuple(reference.shape[-2:]))
    assert torch.allclose(ours, reference, atol=1e-6 * float(reference.abs().max()))


def test_student_lrp0_map_is_lrp0():
    """On a ReLU ResNet, gradient x input equals zennit's epsilon rule (eps -> 0) on every layer, from R = logit."""
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

    from kdcore.explain.canonizers import timm_canonizers

    model, x = tiny(dtype=torch.float64), torch.randn(2, 1, 64, 64, dtype=torch.float64)
    rules = [(Activation, Pass()), (AvgPool, Norm(1e-12)), (BatchNorm, Pass()), (Convolution, Epsilon(1e-12)),
             (Linear, Epsilon(1e-12))]
    with LayerMapComposite(rules, canonizers=timm_canonizers(1e-12)).context(model) as canonized:
        x0 = x.clone().requires_grad_(True)
        logits = canonized(x0)
        (lrp0,) = torch.autograd.grad(logits, x0, torch.eye(4, dtype=x.dtype)[[1, 1]] * logits.detach())
    assert torch.allclose(student_map(model, x, 1, "lrp0"), lrp0.sum(1), atol=1e-9)


@pytest.mark.parametrize("method", list(METHODS))
def test_student_map_gradients_match_finite_differences(method):
    """Directional finite differences, float64, for every parameter tensor (conv, BatchNorm, classifier).

    Gradient x input jumps where a ReLU or max-pool switches, so the step is tiny (1e-9) to stay between kinks.
    """
    model, x = tiny(dtype=torch.float64), torch.randn(2, 1, 64, 64, dtype=torch.float64)
    weights = torch.randn(2, 64, 64, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return (student_map(model, x, torch.tensor([1, 2]), method) * weights).sum()

    names, params = zip(*model.named_parameters())
    # unused: the classifier bias, which gradient x input does not depend on
    grads = [torch.zeros_like(p) if g is None else g
             for p, g in zip(params, torch.autograd.grad(loss(), params, allow_unused=True))]
    assert dict(zip(names, grads))["fc.weight"].abs().sum() > 0, "no gradient reaches the classifier"
    gen, h = torch.Generator().manual_seed(0), 1e-9
    for name, p, g in zip(names, params, grads):
        v = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        with torch.no_grad():
            p += h * v
            up = loss().item()
            p -= 2 * h * v
            down = loss().item()
            p += h * v
        numeric, analytic = (up - down) / (2 * h), float((g * v).sum())
        assert abs(numeric - analytic) <= 1e-4 * max(1.0, abs(analytic)), (name, numeric, analytic)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 6), (2, 1, 1, 6), (2, 0, 2, 3), (1, 2, 1, 2)])
def test_grouped_conv_first_and_second_derivatives(stride, padding, dilation, groups):
    from kdcore.explain.grouped_conv import GroupedConv2d

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 6 // groups, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    conf = ((stride, stride), (padding, padding), (dilation, dilation), groups)
    def fn(x, w):
        return GroupedConv2d.apply(x, w, *conf)
    assert torch.equal(fn(x, w), torch.nn.functional.conv2d(x, w, None, stride, padding, dilation, groups))
    assert torch.autograd.gradcheck(fn, (x, w)) and torch.autograd.gradgradcheck(fn, (x, w))


#: convolution calls per layer of a loss on the map, forward and backward (lrp: two forward passes, each rule's z
#: and transposed convolution, and their derivatives); a call per group would be far more
CONVS_PER_LAYER = {"lrp0": 6, "lrp": 18}


@pytest.mark.parametrize("method", list(CONVS_PER_LAYER))
def test_student_map_differentiates_depthwise_convs_in_one_call_per_layer(method):
    """A loss on a MobileNet's map gets the same parameter gradients as plain autograd, without a call per group."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from kdcore.explain.differentiable import gradient_x_input
    from kdcore.explain.lrp_autograd import lrp_autograd
    from kdcore.explain.methods import PAIRED_SETTINGS

    class CountConvs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += func.name().startswith("aten::convolution")
            return func(*args, **(kwargs or {}))

    model, x = tiny("mobilenetv2_035", torch.float64), torch.randn(2, 1, 64, 64, dtype=torch.float64)
    weights = torch.randn(2, 64, 64, dtype=torch.float64)
    params = list(model.parameters())
    grads, calls = [], []
    plain_map = {"lrp0": gradient_x_input, "lrp": partial(lrp_autograd, **PAIRED_SETTINGS["lrp"])}[method]
    for fn in (plain_map, lambda m, x, t: student_map(m, x, t, method)):
        with CountConvs() as count:
            loss = (fn(model, x, torch.tensor([1, 2])) * weights).sum()
            grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        calls.append(count.calls)
    for plain, fast in zip(*grads):
        assert (plain is None and fast is None) or torch.allclose(plain, fast, rtol=1e-9, atol=1e-12)
    layers = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert calls[1] <= CONVS_PER_LAYER[method] * layers and 3 * calls[1] < calls[0], (layers, calls)


def test_render_overlay_at_upload_size(tmp_path):
    grey = (np.arange(90 * 150).reshape(90, 150) % 251).astype(np.uint8)
    path = tmp_path / "slice.png"
    Image.fromarray(grey).save(path)
    heat = torch.zeros(32, 32)
    heat[10:20, 10:20], heat[0, 0] = 1.0, -1.0
    for method in ("lrp", "gradcam"):
        rgb = render_overlay(path, heat.clamp(min=0) if method == "gradcam" else heat, method)
        assert rgb.shape == (90, 150, 3) and rgb.dtype == np.uint8
        assert (rgb[..., 0] != rgb[..., 2]).any()  # coloured, not grey
    with pytest.raises(KDCoreError):
        render_overlay(path, heat, "shap")


def test_cli_explain(tiny_model_dir, tiny_data, tmp_path, capsys):
    image = min((tiny_data / "glioma").glob("*.jpg"))
    out = tmp_path / "map.png"
    assert main(["explain", "--model", str(tiny_model_dir), "--image", str(image), "--method", "gradcam",
                 "--target", "pituitary", "--out", str(out)]) == 0
    assert Image.open(out).size == Image.open(image).size and "class pituitary" in capsys.readouterr().out
    plain = np.asarray(Image.open(out))
    assert main(["explain", "--model", str(tiny_model_dir), "--image", str(image), "--method", "gradcam",
                 "--target", "pituitary", "--out", str(out), "--box", "0.5 0.5 0.5 0.5"]) == 0
    boxed, (h, w) = np.asarray(Image.open(out)), plain.shape[:2]
    assert "tumour box outlined" in capsys.readouterr().out and tuple(boxed[h // 2, w // 4]) == (0, 255, 0)
    assert (boxed[h // 2, w // 2] == plain[h // 2, w // 2]).all()  # inside the box: the map as before
    assert main(["explain", "--model", str(tiny_model_dir), "--image", str(image), "--out", str(out), "--box",
                 "2 2 1 1"]) == 2
    assert "--box: a box's values are fractions" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["explain", "--model", str(tiny_model_dir), "--image", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
