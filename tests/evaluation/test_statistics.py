"""Statistics over seeds on constructed numbers: the t interval, paired differences and the
verdict each gives, the curve's area on a log2 axis and the steps to a target."""

import math

import pytest

from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.statistics import (
    curve_auc,
    mean_ci,
    paired_difference,
    steps_to_target,
    verdict,
)

T_975_DF3 = 3.182446305284263  # Student t quantile 0.975 with 3 degrees of freedom (tables)


def test_mean_ci_is_the_hand_computed_student_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # sample sd, n - 1 = 3
    assert mean == 2.5
    assert half == pytest.approx(T_975_DF3 * sd / 2.0, rel=1e-9)  # sem = sd / sqrt(4)
    assert half == pytest.approx(2.0543, abs=1e-4)


def test_mean_ci_of_one_value_is_unbounded_and_of_equal_values_is_a_point():
    assert mean_ci([7.0]) == (7.0, math.inf)
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 0.0)
    with pytest.raises(MclnfError, match="values must hold at least one number"):
        mean_ci([])


def test_a_clear_positive_paired_difference_over_three_seeds_holds():
    # the seed moves both methods by several dB; the pairing cancels it
    a = {0: 30.0, 1: 34.0, 2: 27.0}
    b = {0: 29.0, 1: 33.2, 2: 26.1}
    diff = paired_difference(a, b)
    assert diff.n == 3
    assert diff.mean == pytest.approx(0.9)
    assert diff.lo > 0.5 and diff.hi < 1.3
    assert verdict(diff.lo, diff.hi) == "holds"


def test_a_noisy_difference_covering_zero_is_inconclusive_and_a_negative_one_is_reversed():
    noisy = paired_difference({0: 11.0, 1: 9.0, 2: 10.5}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert noisy.mean == pytest.approx(0.5 / 3)
    assert noisy.lo < 0 < noisy.hi
    assert verdict(noisy.lo, noisy.hi) == "inconclusive"
    worse = paired_difference({0: 9.0, 1: 8.8, 2: 9.1}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert worse.hi < 0
    assert verdict(worse.lo, worse.hi) == "reversed"


def test_paired_difference_pairs_by_seed_and_skips_missing_numbers():
    diff = paired_difference({0: 5.0, 1: 7.0, 2: None, 3: 1.0}, {1: 6.0, 0: 3.0, 2: 1.0})
    assert diff.n == 2  # seeds 0 and 1 only
    assert diff.mean == pytest.approx(1.5)  # (5 - 3 + 7 - 6) / 2
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    one = paired_difference({0: 9.0}, {0: 1.0})  # one seed: no interval, never a verdict
    assert (one.mean, one.n) == (8.0, 1)
    assert verdict(one.lo, one.hi) == "inconclusive"
    assert verdict(math.nan, math.nan) == "inconclusive"


def test_auc_is_the_mean_psnr_on_a_log2_step_axis():
    assert curve_auc({"1": 20.0, "2": 20.0, "4": 20.0, "16": 20.0}) == pytest.approx(20.0)
    assert curve_auc({"1": 10.0, "4": 20.0}) == pytest.approx(15.0)
    # x = log2 steps = 0, 1, 3: (10+20)/2 * 1 + (20+30)/2 * 2 = 65 over a range of 3
    assert curve_auc({"8": 30.0, "1": 10.0, "2": 20.0}) == pytest.approx(65.0 / 3)
    assert curve_auc({"1": 17.5}) == 17.5


def test_steps_to_target_is_the_first_checkpoint_reaching_it():
    curve = {"1": 10.0, "2": 19.0, "4": 25.0, "8": 24.0, "16": 31.0}
    assert steps_to_target(curve, 25.0) == 4
    assert steps_to_target(curve, 30.0) == 16
    assert steps_to_target(curve, 5.0) == 1
    assert steps_to_target(curve, 40.0) is None
