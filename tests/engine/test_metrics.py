"""Seed-level paired statistics against values computed by hand (t quantiles from a printed t-table)."""

import math

import numpy as np
import pytest

from kdcore.engine.metrics import paired_over_seeds, paired_t_interval, sign_flip_p_value

T_975 = {1: 12.7062, 2: 4.3027, 4: 2.7764}  # two-sided 95% critical values of Student's t by degrees of freedom


def test_t_interval_of_three_seeds():
    # diffs 1, 2, 3: mean 2, sd 1, half-width t_2 * 1 / sqrt 3
    got = paired_t_interval(np.array([1.0, 2.0, 3.0]))
    half = T_975[2] / math.sqrt(3)
    assert got["diff"] == 2.0 and got["n"] == 3
    assert got["ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-4)


def test_t_interval_of_five_seeds():
    # diffs 0.01 .. 0.05: mean 0.03, deviations -0.02 .. 0.02, sd = sqrt(0.001 / 4) = 0.0158114
    got = paired_t_interval(np.array([0.01, 0.02, 0.03, 0.04, 0.05]))
    half = T_975[4] * math.sqrt(0.001 / 4) / math.sqrt(5)  # = 0.019632
    assert got["diff"] == pytest.approx(0.03) and got["ci95"] == pytest.approx([0.03 - half, 0.03 + half], abs=1e-5)


def test_one_seed_has_no_interval():
    assert paired_t_interval(np.array([0.2])) == {"diff": 0.2, "ci95": None, "n": 1}


def test_exact_sign_flip_p_values():
    # 1, 2, 3: the 8 signed sums are +-6, +-4, +-2, 0, 0; |sum| >= 6 in 2 of 8
    assert sign_flip_p_value(np.array([1.0, 2.0, 3.0])) == 0.25
    assert sign_flip_p_value(np.array([0.1, 0.2, 0.3])) == 0.25  # the observed pattern counts despite round-off
    # 3, -1, 1 (sum 3): the signed sums are +-5, +-3, +-3, +-1; |sum| >= 3 in 6 of 8
    assert sign_flip_p_value(np.array([3.0, -1.0, 1.0])) == 0.75
    # five differences of one sign: only the all-plus and all-minus patterns reach, 2 of 32
    assert sign_flip_p_value(np.array([0.01, 0.02, 0.03, 0.04, 0.05])) == 0.0625
    assert sign_flip_p_value(np.zeros(4)) == 1.0 and sign_flip_p_value(np.array([0.2])) == 1.0


def test_random_sign_flips_beyond_twelve_seeds():
    # 13 equal differences: exactly 2 / 2^13 = 0.000244; random flips estimate it, counting the observed pattern
    p = sign_flip_p_value(np.ones(13), n_random=100_000)
    assert 1.5e-4 < p < 4e-4
    assert sign_flip_p_value(np.ones(13), n_random=1000, seed=1) == sign_flip_p_value(np.ones(13), 1000, 1)


def test_paired_over_seeds():
    # accuracies of A and B on seeds 0, 1: diffs 0.05 and 0: mean 0.025, sd 0.05 / sqrt 2, half t_1 * 0.025
    got = paired_over_seeds(np.array([0.90, 0.80]), np.array([0.85, 0.80]))
    assert got["diff"] == pytest.approx(0.025) and got["n"] == 2
    assert got["ci95"] == pytest.approx([0.025 - T_975[1] * 0.025, 0.025 + T_975[1] * 0.025], abs=1e-5)
    assert got["p"] == 1.0  # every sign pattern gives |mean| 0.025
