"""One section's runs over several seeds: each method's metrics per seed and their aggregates.

A pipeline run reports one summary per method (:meth:`MethodResult.summary`). Run once per seed,
the summaries are regrouped as method -> seed -> summary (:func:`per_seed`), so a claim can pair
two methods seed by seed, and each metric is reported as mean +- 95 % half-width over the seeds
(:func:`aggregate`).
"""

import math
from collections.abc import Sequence
from typing import Any

from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.statistics import curve_auc, mean_ci, steps_to_target

SeedSummaries = dict[str, dict[int, dict]]
"""method -> seed -> :meth:`MethodResult.summary`."""

EARLY_STEP = 16
"""The early budget a claim looks at (besides step 1 and the whole curve's AUC)."""

METRICS = (
    "psnr_step1",
    "psnr_at_16",
    "auc",
    "psnr_last",
    "ssim_last",
    "forgetting",
    "steps_to_target",
)
"""What is aggregated per method. ``psnr_at_16`` is PSNR at :data:`EARLY_STEP`, or at the last
checkpoint when the budget is smaller (:func:`early_step`); ``auc`` is :func:`curve_auc`."""


def per_seed(runs: Sequence[dict], seeds: Sequence[int]) -> SeedSummaries:
    """method -> seed -> summary, from one pipeline report per seed (``runs[i]`` ran
    ``seeds[i]``)."""
    if len(runs) != len(seeds):
        raise MclnfError(f"runs must hold one report per seed ({len(seeds)}), got {len(runs)}")
    grouped: SeedSummaries = {}
    for seed, run in zip(seeds, runs, strict=True):
        for summary in run["results"]:
            grouped.setdefault(summary["method"], {})[int(seed)] = summary
    return grouped


def early_step(summaries: SeedSummaries) -> int:
    """:data:`EARLY_STEP`, or the smallest last checkpoint of any run when a budget is smaller
    (so every method and seed has a number there)."""
    runs = [s for by_seed in summaries.values() for s in by_seed.values()]
    lasts = [max(int(step) for step in s["curve"]) for s in runs]
    return min([EARLY_STEP, *lasts])


def metric(summary: dict, name: str, early: int, target: float) -> float | None:
    """One of :data:`METRICS` from one summary (None: not measured, or the target not reached)."""
    if name == "psnr_at_16":
        return summary["curve"].get(str(early))
    if name == "auc":
        return curve_auc(summary["curve"])
    if name == "steps_to_target":  # censored: a run that never reaches it counts as its budget
        reached = steps_to_target(summary["curve"], target)
        return float(max(int(step) for step in summary["curve"]) if reached is None else reached)
    if name not in METRICS:
        raise MclnfError(f"metric must be one of: {', '.join(METRICS)}, got {name!r}")
    return summary.get(name)


def values_by_seed(
    summaries: SeedSummaries, method: str, name: str, early: int, target: float
) -> dict[int, float | None]:
    """seed -> the metric of ``method`` (empty when the method did not run)."""
    by_seed = summaries.get(method, {})
    return {seed: metric(s, name, early, target) for seed, s in by_seed.items()}


def finite_or_none(value: float) -> float | None:
    """JSON has no inf/nan: an unbounded half-width (one seed) is stored as None."""
    return value if math.isfinite(value) else None


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    """{"mean", "ci95" (half-width; None with one value), "values"} over the non-None values;
    mean and ci95 are None when no value was measured."""
    measured = [v for v in values if v is not None]
    if not measured:
        return {"mean": None, "ci95": None, "values": list(values)}
    mean, half = mean_ci(measured)
    return {"mean": mean, "ci95": finite_or_none(half), "values": list(values)}


def aggregate(summaries: SeedSummaries, target: float) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> metric -> {"mean", "ci95", "values"} over the seeds (values in seed order).

    ``steps_to_target`` is over every seed, a seed that never reached ``target`` counted as its
    budget (censored: the mean is then a lower bound), and adds ``not_reached``, how many did not.
    """
    early = early_step(summaries)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, by_seed in summaries.items():
        seeds = sorted(by_seed)
        out[method] = {}
        for name in METRICS:
            values = [metric(by_seed[s], name, early, target) for s in seeds]
            entry = summarise(values)
            if name == "steps_to_target":
                entry["not_reached"] = sum(
                    steps_to_target(by_seed[s]["curve"], target) is None for s in seeds
                )
            out[method][name] = entry
    return out


def on_segments(summary: dict, positions: Sequence[int]) -> dict:
    """``summary`` as judged on some of its segments only (e.g. the city's never-meta-trained
    blocks, by their position in the block order): the curve is the mean PSNR of those segments
    at every checkpoint (``segment_curve``), forgetting the mean drop of those of them learned
    before the last (``segment_matrix``), SSIM dropped (it is of whole images)."""
    curve = {
        step: sum(values[i] for i in positions) / len(positions)
        for step, values in summary["segment_curve"].items()
    }
    matrix = summary.get("segment_matrix")
    forgetting = None
    if matrix is not None and len(matrix) >= 2:
        last = len(matrix) - 1
        drops = [
            max(matrix[i][j] for i in range(j, last)) - matrix[last][j]
            for j in positions
            if j < last
        ]
        forgetting = sum(drops) / len(drops) if drops else None
    steps = sorted(curve, key=int)
    return {
        **summary,
        "curve": curve,
        "psnr_step1": curve[steps[0]],
        "psnr_last": curve[steps[-1]],
        "ssim_last": None,
        "forgetting": forgetting,
    }
