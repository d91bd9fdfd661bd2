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
    """A mean and its 95 % interval [lo, hi] over ``n`` seeds."""

    mean: float
    lo: float
    hi: float
    n: int

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
    mean, half = mean_ci([a[s] - b[s] for s in seeds])  # type: ignore[operator]
    return Interval(mean, mean - half, mean + half, len(seeds))


def verdict(lo: float, hi: float) -> Verdict:
    """ "holds" when the interval of a difference lies above zero, "reversed" below zero,
    "inconclusive" when it covers zero (or is undefined: nan)."""
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
