"""The differentiable LRP map: zennit's map on real MRIs, exact parameter gradients, conservation, refusals."""

import numpy as np
import pytest
import timm
import torch
from torch import nn

from kdcore.data.augment import to_input
from kdcore.data.imageio import decode_to_uint8
from kdcore.errors import KDCoreError
from kdcore.explain import lrp_map
from kdcore.explain._common import resize_maps
from kdcore.explain.lrp import DESTRIDING
from kdcore.explain.lrp_autograd import lrp_autograd
from kdcore.explain.methods import PAIRED_SETTINGS
from kdcore.models.folder import load_folder
from kdcore.paths import BUNDLED_MODELS
from tests.explain.test_explain_lrp import calibrated
from tests.helpers import REPO, SAMPLES

BUNDLED = REPO / "kdcore" / "bundled" / "models"


def samples(size: int, channels: int = 1) -> torch.Tensor:
    """The bundled sample MRIs as model input ``(8, C, size, size)``."""
    from kdcore.data.imageio import InputSpec

    files = sorted(SAMPLES.glob("*.jpg"))
    pixels = torch.from_numpy(np.stack([decode_to_uint8(f, size) for f in files]))
    return to_input(pixels, InputSpec(size=size, channels=channels))


def model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    if name in BUNDLED_MODELS:
        model, info = load_folder(BUNDLED / name)
        return model, samples(info.spec.size, info.spec.channels)
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=4, in_chans=1).eval(), samples(128)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


#: every model with the sem loss's composite; the destrided composites on a ResNet with strided 1x1 shortcuts and
#: a depthwise mobile net
REAL_MRI_CASES = [*((name, PAIRED_SETTINGS["lrp"]["composite"])
                    for name in (*BUNDLED_MODELS, "mobilenetv2_035", "mobilenetv3_small_050")),
                  *((name, composite) for composite in DESTRIDING if composite != PAIRED_SETTINGS["lrp"]["composite"]
                    for name in ("teacher", "mobilenetv2_035"))]


@pytest.mark.parametrize(("name", "composite"), REAL_MRI_CASES)
def test_matches_zennit_on_real_mris(name, composite):
    """Per image, at full resolution and at the sem loss's 32 x 32, the student set to the teacher (MobileNetV3:
    squeeze-excitation gates, Hardswish)."""
    model, x = model_and_input(name)
    reference = lrp_map(model, x, composite=composite)
    ours = lrp_autograd(model, x, composite=composite)
    assert ours.shape == reference.shape
    ours.sum().backward()  # trainable: first derivatives of the activations suffice
    assert all(p.grad is not None for p in model.parameters())
    ours = ours.detach()
    assert cosine(ours, reference).min() >= 0.99
    assert cosine(resize_maps(ours, (32, 32)), resize_maps(reference, (32, 32))).min() >= 0.99


def tiny() -> nn.Module:
    """Strided convolutions, BatchNorm, a convolution fed negative inputs (no activation before it), pooling."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, 2, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3, 2, 1),
                          nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    return calibrated(model, 8).double()


@pytest.mark.parametrize("composite", list(DESTRIDING))
def test_gradcheck_in_the_parameters(composite):
    model, x = tiny(), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    params = tuple(model.parameters())
    assert torch.allclose(lrp_autograd(model, x, 1, composite), lrp_map(model, x, 1, composite), atol=1e-9)
    assert torch.autograd.gradcheck(lambda *_: lrp_autograd(model, x, torch.tensor([1, 2]), composite), params)


@pytest.mark.parametrize("arch", ["test_resnet", "resnet10t"])
def test_relevance_sums_to_the_target_logit_without_biases(arch):
    """On ResNets; on MobileNets z+ drops the relevance of units with no positive contribution, as zennit's does."""
    model = calibrated(timm.create_model(arch, num_classes=4, in_chans=1), 32, zero_biases=True).double()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    relevance = lrp_autograd(model, x, 1).detach()
    logit = model(x)[:, 1].detach()
    assert torch.allclose(relevance.sum((1, 2)), logit, rtol=1e-3, atol=1e-9)


def test_uncovered_layers_and_composites_are_clear_errors():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(KDCoreError, match="does not cover GroupNorm"):
        lrp_autograd(model, torch.randn(1, 1, 8, 8))
    with pytest.raises(KDCoreError, match="choose from epsilon-plus-flat"):
        lrp_autograd(tiny(), torch.randn(1, 1, 8, 8, dtype=torch.float64), composite="alpha-beta")
