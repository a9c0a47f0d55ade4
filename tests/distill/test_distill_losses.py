"""Golden values of each distillation loss term, computed by hand on tiny tensors."""

import math
from types import SimpleNamespace

import pytest
import torch

from kdcore.distill import DistillConfig, parse_loss
from kdcore.distill.losses import (
    LOSSES,
    Step,
    ce_loss,
    dist_loss,
    dkd_loss,
    feat_loss,
    kd_loss,
    rel_loss,
    sem_loss,
)
from kdcore.explain import resize_maps


def test_registry_names_and_needs():
    assert list(LOSSES) == ["ce", "kd", "dkd", "dist", "feat", "sem", "rel"]
    assert LOSSES["ce"].teacher == () and LOSSES["sem"].teacher == ("map",)
    assert LOSSES["dkd"].teacher == LOSSES["dist"].teacher == ("logits",)


def test_registered_logit_terms_use_the_config_settings():
    cfg = DistillConfig(loss={"dkd": 1, "dist": 1}, temperature=2.0, dkd_beta=0.0, dist_beta=2.0, dist_gamma=0.5)
    d = SimpleNamespace(cfg=cfg)
    step = Step(x=torch.zeros(2, 1, 4, 4), y=DKD_Y, feats=torch.zeros(2, 1, 1, 1), logits=DKD_S,
                teacher={"logits": DKD_T})
    assert LOSSES["dkd"].fn(d, step).item() == pytest.approx(4 * _hand_tckd_nckd()[0], abs=1e-6)
    inter, intra = _hand_dist()
    s, t = torch.tensor(DIST_PS).log(), torch.tensor(DIST_PT).log()
    step = Step(step.x, step.y, step.feats, 2 * s, {"logits": 2 * t})
    assert LOSSES["dist"].fn(d, step).item() == pytest.approx(4 * (2 * inter + 0.5 * intra), abs=1e-5)


def test_loss_option_takes_the_logit_terms():
    cfg = DistillConfig(loss=parse_loss("ce=1,dkd=1,dist=0.5"), kd_standardize=True)
    assert cfg.describe() == "1*ce + 1*dkd(T=4, alpha=1, beta=8) + 0.5*dist(T=4, beta=1, gamma=1)"
    assert DistillConfig(loss={"kd": 1}, kd_standardize=True).describe() == "1*kd(T=4, z-score)"


def test_ce_golden():
    # softmax([0, ln 3]) = [1/4, 3/4]; CE for class 1 = -ln(3/4)
    got = ce_loss(torch.tensor([[0.0, math.log(3)]]), torch.tensor([1]))
    assert got.item() == pytest.approx(math.log(4 / 3), abs=1e-6)


def test_kd_golden():
    # T = 2: teacher [0, 2 ln 3] / T -> p_t = [1/4, 3/4]; student [0, 0] -> p_s = [1/2, 1/2]
    got = kd_loss(torch.zeros(1, 2), torch.tensor([[0.0, 2 * math.log(3)]]), temperature=2.0)
    want = 4 * (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5))
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert kd_loss(torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0, -2.0]]), 4.0).item() == pytest.approx(0, abs=1e-7)


def test_kd_standardized_golden():
    # two classes: z-scoring (std with n - 1) maps any [a, b], a < b, to [-1/sqrt 2, +1/sqrt 2]; [0, 0] stays [0, 0]
    u = 1 / math.sqrt(2)
    p_t = [1 / (1 + math.exp(2 * u)), math.exp(2 * u) / (1 + math.exp(2 * u))]  # softmax([-u, u])
    want = sum(p * math.log(p / 0.5) for p in p_t)  # student: softmax([0, 0]) = [1/2, 1/2]; T = 1
    got = kd_loss(torch.zeros(1, 2), torch.tensor([[0.0, 5.0]]), temperature=1.0, standardize=True)
    assert got.item() == pytest.approx(want, abs=1e-6)
    # only the logits' relations count: a shifted, scaled teacher is matched exactly
    s, t = torch.tensor([[1.0, 2.0, 4.0]]), torch.tensor([[12.0, 14.0, 18.0]])
    assert kd_loss(s, t, 4.0, standardize=True).item() == pytest.approx(0, abs=1e-6)
    assert kd_loss(s, t, 4.0).item() > 0.5


# Two samples x three classes for DKD, T = 2 (so the logits are 2 ln of the probabilities' odds):
#   sample 1, label 0: student [0, 0, 0] -> p_s = [1/3, 1/3, 1/3]; teacher 2 [ln 2, 0, 0] -> p_t = [1/2, 1/4, 1/4]
#   sample 2, label 1: student 2 [ln 3, 0, 0] -> p_s = [3/5, 1/5, 1/5]; teacher 2 [0, 0, ln 3] -> [1/5, 1/5, 3/5]
DKD_S = torch.tensor([[0.0, 0.0, 0.0], [2 * math.log(3), 0.0, 0.0]])
DKD_T = torch.tensor([[2 * math.log(2), 0.0, 0.0], [0.0, 0.0, 2 * math.log(3)]])
DKD_Y = torch.tensor([0, 1])


def _hand_tckd_nckd() -> tuple[float, float]:
    """Batch means of TCKD and NCKD (before T^2) of DKD_S, DKD_T, DKD_Y, step by step."""
    # TCKD, binary (target, rest): sample 1 teacher [1/2, 1/2] vs student [1/3, 2/3]; sample 2 both [1/5, 4/5]
    tckd1 = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    tckd2 = 0.0
    # NCKD, over the non-target classes: sample 1 classes {1, 2}: teacher [1/2, 1/2], student [1/2, 1/2] -> 0;
    # sample 2 classes {0, 2}: teacher [1/4, 3/4], student [3/4, 1/4]
    nckd1 = 0.0
    nckd2 = 0.25 * math.log(0.25 / 0.75) + 0.75 * math.log(0.75 / 0.25)  # = ln 3 / 2
    return (tckd1 + tckd2) / 2, (nckd1 + nckd2) / 2


def test_dkd_golden():
    tckd, nckd = _hand_tckd_nckd()
    got = dkd_loss(DKD_S, DKD_T, DKD_Y, alpha=1.0, beta=8.0, temperature=2.0)
    assert got.item() == pytest.approx(4 * (tckd + 8 * nckd), abs=1e-5)
    assert nckd == pytest.approx(math.log(3) / 4)


def test_dkd_without_nckd_is_tckd():
    assert dkd_loss(DKD_S, DKD_T, DKD_Y, 1.0, 0.0, 2.0).item() == pytest.approx(4 * _hand_tckd_nckd()[0], abs=1e-6)
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    p_s, p_t = (torch.softmax(z / 3, 1)[torch.arange(6), y].double() for z in (s, t))  # target-class probabilities
    tckd = (p_t * (p_t / p_s).log() + (1 - p_t) * ((1 - p_t) / (1 - p_s)).log()).mean() * 9
    assert dkd_loss(s, t, y, 1.0, 0.0, 3.0).item() == pytest.approx(tckd.item(), rel=1e-5)
    assert dkd_loss(t, t, y, 1.0, 8.0, 3.0).item() == pytest.approx(0, abs=1e-6)


# DIST on probabilities (T = 1, logits = ln p, so softmax(z) = p):
DIST_PS = [[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]
DIST_PT = [[0.25, 0.5, 0.25], [0.1, 0.3, 0.6]]


def _hand_dist() -> tuple[float, float]:
    """DIST's inter and intra terms of DIST_PS, DIST_PT, step by step."""
    # rows, centred: sample 1 student [1/6, -1/12, -1/12], teacher [-1/12, 1/6, -1/12]: dot -1/48, norms^2 1/24 each
    r1 = (-1 / 48) / (1 / 24)  # = -1/2
    # sample 2, in 30ths: student [-4, -1, 5], teacher [-7, -1, 8]: dot 69, norms^2 42 and 114
    r2 = 69 / math.sqrt(42 * 114)
    inter = 1 - (r1 + r2) / 2
    # columns over the 2 samples: a correlation of two points is the sign of the product of their differences:
    # class 0: student 0.5 -> 0.2, teacher 0.25 -> 0.1: +1; class 1: 0.25 -> 0.3 vs 0.5 -> 0.3: -1; class 2: +1
    intra = 1 - (1 - 1 + 1) / 3
    return inter, intra


def test_dist_golden():
    inter, intra = _hand_dist()
    s, t = torch.tensor(DIST_PS).log(), torch.tensor(DIST_PT).log()
    assert dist_loss(s, t, 1.0, 1.0, 1.0).item() == pytest.approx(inter + intra, abs=1e-5)
    assert dist_loss(s, t, 2.0, 0.5, 1.0).item() == pytest.approx(2 * inter + 0.5 * intra, abs=1e-5)
    assert dist_loss(2 * s, 2 * t, 1.0, 1.0, 2.0).item() == pytest.approx(4 * (inter + intra), abs=1e-5)  # T^2


def test_dist_is_zero_for_the_teacher_itself():
    torch.manual_seed(1)
    t = 3 * torch.randn(8, 4)
    # zero up to DIST's eps (1e-8 beside the product of the centred norms, which shrink as T flattens softmax)
    assert dist_loss(t.clone(), t, 1.0, 1.0, 1.0).item() == pytest.approx(0, abs=1e-5)
    assert dist_loss(t.clone(), t, 1.0, 1.0, 4.0).item() == pytest.approx(0, abs=1e-3)
    assert dist_loss(3 * torch.randn(8, 4), t, 1.0, 1.0, 1.0).item() > 0.1


@pytest.mark.parametrize("name", ["dkd", "dist"])
def test_logit_terms_train_the_student_only(name):
    torch.manual_seed(2)
    s, t = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    loss = dkd_loss(s, t, y, 1.0, 8.0, 4.0) if name == "dkd" else dist_loss(s, t, 1.0, 1.0, 4.0)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all() and t.grad is None


def test_feat_golden():
    s = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    t = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    assert feat_loss(s, t, "cosine").item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert feat_loss(s, t, "l2").item() == pytest.approx(0.5, abs=1e-7)  # ((1-1)^2 + (0-1)^2) / 2
    assert feat_loss(3 * t, t, "cosine").item() == pytest.approx(0, abs=1e-6)  # scale-free
    with pytest.raises(ValueError):
        feat_loss(s, t, "l1")


def test_sem_golden_with_resize():
    student = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2)
    teacher = torch.zeros(1, 4, 4)
    teacher[0, :2, :] = 1.0  # pools to [[1, 1], [0, 0]]
    assert sem_loss(student, teacher).item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert sem_loss(teacher, teacher).item() == pytest.approx(0, abs=1e-6)


def test_rel_golden():
    f_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)  # G_s = I
    f_t = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(2, 2, 1, 1)  # G_t rows = [1, 1] / sqrt 2
    assert rel_loss(f_s, f_t).item() == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-6)  # (4 - 2 sqrt 2) / 4


def test_resize_maps_pools_and_interpolates():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert resize_maps(x, (2, 2)).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert resize_maps(x, (8, 8)).shape == (1, 1, 8, 8)


def test_teacher_side_carries_no_gradient():
    s = torch.randn(2, 3, requires_grad=True)
    t = torch.randn(2, 3, requires_grad=True)
    kd_loss(s, t, 4.0).backward()
    assert s.grad is not None and t.grad is None


def test_sem_records_one_rule_for_both_sides_and_refuses_a_mismatch():
    from kdcore.errors import KDCoreError

    lrp = DistillConfig(loss={"sem": 1.0})
    assert lrp.sem_rules == {"map": "lrp", "teacher": "lrp epsilon-plus-flat", "student": "lrp epsilon-plus-flat"}
    assert lrp.describe() == "1*sem(lrp epsilon-plus-flat)"
    assert DistillConfig.from_dict(lrp.to_dict()).sem_rules == lrp.sem_rules  # a saved run's config reloads
    old = DistillConfig(loss={"sem": 1.0}, sem_map="lrp0")
    assert old.sem_rules["teacher"] == old.sem_rules["student"] == "lrp0 (gradient x input)"
    overridden = DistillConfig.from_dict(lrp.to_dict() | {"sem_map": "gradcam"})  # a preset's rules, another map
    assert overridden.sem_rules == {"map": "gradcam", "teacher": "gradcam last", "student": "gradcam last"}
    mixed = {"map": "lrp", "teacher": "lrp epsilon-plus-flat", "student": "lrp0 (gradient x input)"}
    with pytest.raises(KDCoreError, match="different rules"):
        DistillConfig(loss={"sem": 1.0}, sem_rules=mixed)
    stale = {"map": "lrp", "teacher": "lrp epsilon-plus-flat-destrided", "student": "lrp epsilon-plus-flat-destrided"}
    with pytest.raises(KDCoreError, match="is not the one sem map 'lrp' uses now"):
        DistillConfig(loss={"sem": 1.0}, sem_rules=stale)
