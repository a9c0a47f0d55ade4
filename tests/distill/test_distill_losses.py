"""Golden values of each distillation loss term, computed by hand on tiny tensors."""

import math

import pytest
import torch

from kdcore.distill.losses import LOSSES, ce_loss, feat_loss, kd_loss, match_size, rel_loss, sem_loss


def test_registry_names_and_needs():
    assert list(LOSSES) == ["ce", "kd", "feat", "sem", "rel"]
    assert LOSSES["ce"].teacher == () and LOSSES["sem"].teacher == ("map",)


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


def test_match_size_pools_and_interpolates():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert match_size(x, (2, 2)).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert match_size(x, (8, 8)).shape == (1, 1, 8, 8)


def test_teacher_side_carries_no_gradient():
    s = torch.randn(2, 3, requires_grad=True)
    t = torch.randn(2, 3, requires_grad=True)
    kd_loss(s, t, 4.0).backward()
    assert s.grad is not None and t.grad is None
