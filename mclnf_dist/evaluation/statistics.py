"""Statistics over seeds: means with 95 % intervals, paired differences and their verdicts, and
the curve summaries (area under the curve, steps to a target) a claim is judged on.

A single run's difference of +0.16 dB says nothing about whether one method beats another: the
seed alone moves numbers by that much. So every claim compares two methods *run with the same
seeds* (a paired difference: the seed's own luck cancels) and calls it only when the 95 %
Student-t interval of the mean difference excludes zero.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats

from mclnf_dist.errors import MclnfError

Verdict = Literal["holds", "inconclusive", "reversed"]
CONFIDENCE = 0.95


class Interval(NamedTuple):
    """A mean and its 95 % interval [lo, hi] over ``n`` seeds, and the two-sided p-value of a
    Student t test of mean 0 (1.0 when ``n`` is 1: one seed proves nothing)."""

    mean: float
    lo: float
    hi: float
    n: int
    p: float = 1.0

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width) of the 95 % Student-t interval of the mean of ``values``.

    One value gives a half-width of ``inf``: a t interval needs at least two samples to estimate
    the spread, and an unbounded interval is the honest way to say one seed proves nothing (every
    verdict built on it is "inconclusive"). Identical values give a half-width of 0.
    """
    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size == 0:
        raise MclnfError("values must hold at least one number, got none")
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.inf
    sem = float(data.std(ddof=1)) / math.sqrt(data.size)
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=data.size - 1))
    return mean, t * sem


def paired_difference(
    a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> Interval | None:
    """Mean of ``a[seed] - b[seed]`` over the seeds both have a number for, with its interval.

    Args:
        a, b: seed -> metric of two methods (None: not measured for that seed).
    Returns:
        The interval of the mean difference, or None when no seed has both numbers.
    """
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if not seeds:
        return None
    differences = [a[s] - b[s] for s in seeds]  # type: ignore[operator]
    mean, half = mean_ci(differences)
    return Interval(mean, mean - half, mean + half, len(seeds), t_test_p(differences))


def t_test_p(values: Sequence[float]) -> float:
    """Two-sided p-value of a one-sample Student t test of mean 0 (a paired test when ``values``
    are paired differences). One value: 1.0. Identical values: 0.0 unless they are all 0."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return 1.0
    mean = float(data.mean())
    if float(np.ptp(data)) <= 1e-9 * max(1.0, abs(mean)):  # no spread (up to rounding): the
        return 1.0 if mean == 0.0 else 0.0  # mean is the answer (scipy gives nan or noise)
    return float(stats.ttest_1samp(data, 0.0).pvalue)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (same order as given): comparisons whose adjusted p
    is below q are discoveries at false discovery rate q over the whole family."""
    if not p_values:
        return []
    return [float(p) for p in stats.false_discovery_control(np.asarray(p_values, dtype=float))]


def verdict(lo: float, hi: float, p_adjusted: float | None = None) -> Verdict:
    """ "holds" when the interval of a difference lies above zero, "reversed" below zero,
    "inconclusive" when it covers zero (or is undefined: nan); with ``p_adjusted`` (corrected
    for multiplicity), a side is only taken when it is also below ``1 - CONFIDENCE``."""
    if p_adjusted is not None and not p_adjusted < 1 - CONFIDENCE:
        return "inconclusive"
    if lo > 0:
        return "holds"
    if hi < 0:
        return "reversed"
    return "inconclusive"


def sorted_curve(curve: Mapping[str | int, float]) -> list[tuple[int, float]]:
    """(step, PSNR) pairs of a summary's curve (keys are step numbers as text) in step order."""
    return sorted((int(step), float(psnr)) for step, psnr in curve.items())


def curve_auc(curve: Mapping[str | int, float]) -> float:
    """Mean PSNR (dB) over the budget: the area under PSNR vs log2(step) through the checkpoints
    (trapezoids), divided by the log2 range.

    Checkpoints are 1, 2, 4, ..., so on a log axis each counts about equally: the early steps,
    where a good init shows, weigh as much as the late ones. A one-checkpoint curve is its value.
    """
    points = sorted_curve(curve)
    if not points:
        raise MclnfError("curve must hold at least one checkpoint, got none")
    if len(points) == 1:
        return points[0][1]
    x = np.log2([step for step, _ in points])
    y = np.asarray([psnr for _, psnr in points])
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return area / float(x[-1] - x[0])


def steps_to_target(curve: Mapping[str | int, float], target: float) -> int | None:
    """The first checkpoint whose PSNR reaches ``target`` dB, or None if none does."""
    for step, psnr in sorted_curve(curve):
        if psnr >= target:
            return step
    return None
