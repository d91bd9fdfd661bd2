"""A finished sweep as a table: one row per trial, the best trial, and the files written from them.

Outputs (in the sweep's folder): ``best_config.yaml`` (the best trial's full pipeline config,
loadable with the pipeline's ``--config``), ``trials.csv`` and ``results.md`` (trial, params, final
val PSNR, PSNR after one step, rounds run, stopped early?) and ``val_psnr.png`` (val PSNR against
meta-round for every trial).
"""

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import matplotlib

from mclnf_dist.config import save_yaml
from mclnf_dist.evaluation.tables import format_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class TrialRow:
    """What one trial did."""

    trial_id: str
    params: dict[str, Any]
    val_psnr: float | None
    """Validation PSNR after ``adapt_step`` steps, at the trial's last report."""
    val_psnr_step1: float | None
    rounds: int
    """Meta-rounds run (the budget unless the scheduler stopped the trial)."""
    budget: int
    error: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(round, val PSNR) of every report."""

    @property
    def completed(self) -> bool:
        return self.error is None and self.rounds >= self.budget

    @property
    def stopped_early(self) -> bool:
        return self.error is None and self.rounds < self.budget

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "stopped early" if self.stopped_early else "completed"


def rows_from_results(results: Any, budget: int) -> list[TrialRow]:
    """One :class:`TrialRow` per trial of a Tune ``ResultGrid``, in trial order."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        frame = result.metrics_dataframe
        curve = []
        if frame is not None and "val_psnr" in frame:
            frame = frame.dropna(subset=["val_psnr"]).drop_duplicates("round", keep="last")
            pairs = zip(frame["round"], frame["val_psnr"], strict=True)
            curve = [(int(r), float(v)) for r, v in pairs]
        trial_id = metrics.get("trial_id") or Path(str(result.path)).name
        rows.append(
            TrialRow(
                trial_id=str(trial_id),
                params=dict(result.config or {}),
                val_psnr=_number(metrics.get("val_psnr")),
                val_psnr_step1=_number(metrics.get("val_psnr_step1")),
                rounds=int(metrics.get("round", 0) or 0),
                budget=budget,
                error=None if result.error is None else str(result.error).splitlines()[0][:200],
                curve=sorted(curve),
            )
        )
    return sorted(rows, key=lambda row: row.trial_id)


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The highest final val PSNR among trials that ran their whole budget (else among all)."""
    scored = [r for r in rows if r.val_psnr is not None and r.error is None]
    completed = [r for r in scored if r.completed]
    pool = completed or scored
    return max(pool, key=lambda r: r.val_psnr) if pool else None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_rows(rows: list[TrialRow], keys: list[str], best: TrialRow | None) -> list[list[str]]:
    out = []
    for row in rows:
        mark = "*" if best is not None and row.trial_id == best.trial_id else ""
        out.append(
            [
                row.trial_id + mark,
                *[_fmt(row.params.get(k)) for k in keys],
                "-" if row.val_psnr is None else f"{row.val_psnr:.2f}",
                "-" if row.val_psnr_step1 is None else f"{row.val_psnr_step1:.2f}",
                f"{row.rounds}/{row.budget}",
                row.status,
            ]
        )
    return out


def header(keys: list[str], adapt_step: int) -> list[str]:
    return ["trial", *keys, f"val PSNR@{adapt_step}", "val PSNR@1", "rounds", "status"]


def text_table(rows: list[TrialRow], keys: list[str], adapt_step: int, title: str) -> str:
    """The table printed at the end of a sweep (``*`` marks the best trial)."""
    body = table_rows(rows, keys, best_row(rows))
    return f"{title}\n" + format_table(header(keys, adapt_step), body, markdown=False)


def markdown_table(rows: list[TrialRow], keys: list[str], adapt_step: int) -> str:
    """The same table as :func:`text_table`, in markdown, for ``results.md``."""
    return format_table(header(keys, adapt_step), table_rows(rows, keys, best_row(rows)))


def grouped_table(rows: list[TrialRow], keys: list[str], adapt_step: int) -> str:
    """Markdown: final val PSNR (and after one step) by the values of ``keys``, as mean, spread
    (min..max) and count over the other swept params (e.g. seeds): a sensitivity table."""
    groups: dict[tuple, list[TrialRow]] = {}
    for row in rows:
        if row.val_psnr is not None and row.error is None:
            groups.setdefault(tuple(row.params.get(k) for k in keys), []).append(row)

    def stats(values: list[float]) -> str:
        if not values:  # e.g. no trial of the group reported a one-step PSNR
            return "-"
        mean = sum(values) / len(values)
        return (
            f"{mean:.2f}"
            if len(values) == 1
            else f"{mean:.2f} ({min(values):.2f}..{max(values):.2f})"
        )

    head = [*keys, f"val PSNR@{adapt_step}", "val PSNR@1", "trials"]
    lines = []
    for key in sorted(groups, key=lambda k: tuple(str(v) if v is None else v for v in k)):
        group = groups[key]
        cells = [
            *[_fmt(v) for v in key],
            stats([r.val_psnr for r in group]),
            stats([r.val_psnr_step1 for r in group if r.val_psnr_step1 is not None]),
            str(len(group)),
        ]
        lines.append(cells)
    return format_table(head, lines)


def write_csv(rows: list[TrialRow], keys: list[str], path: Path) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["trial_id", *keys, "val_psnr", "val_psnr_step1", "rounds", "budget", "status"]
        )
        for row in rows:
            writer.writerow(
                [
                    row.trial_id,
                    *[row.params.get(k) for k in keys],
                    row.val_psnr,
                    row.val_psnr_step1,
                    row.rounds,
                    row.budget,
                    row.status,
                ]
            )


def plot_curves(rows: list[TrialRow], path: Path, title: str, adapt_step: int) -> None:
    """Val PSNR against meta-round, one line per trial (dashed: stopped early)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    best = best_row(rows)
    for row in rows:
        if not row.curve:
            continue
        rounds, psnr = zip(*row.curve, strict=True)
        style = "--" if row.stopped_early else "-"
        width = 2.5 if best is not None and row.trial_id == best.trial_id else 1.2
        ax.plot(rounds, psnr, style, marker="o", ms=3, lw=width, label=row.trial_id)
    ax.set_xlabel("meta-round")
    ax.set_ylabel(f"validation PSNR after {adapt_step} steps (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class SweepSummary(TypedDict, total=False):
    """``summary.json`` of a sweep, as :func:`~mclnf_dist.sweeps.driver.run_sweep` returns it."""

    name: str
    folder: str
    trials: int
    stopped_early: int
    errors: int
    best: dict[str, Any] | None
    """The best trial: id, params, val PSNR (last and step 1), rounds, its config file."""
    mlflow_run_id: str
    """The sweep's parent MLflow run."""
    experiment: str


def write_results(
    cfg: Any, space: Any, rows: list[TrialRow], folder: Path, name: str
) -> SweepSummary:
    """best_config.yaml, trials.csv, results.md, val_psnr.png; the table printed.

    ``cfg``: the sweep's config (search, scheduler); ``space``: its :class:`SweepSpace`."""
    keys = list(space.params)
    step = space.metric.adapt_step
    best = best_row(rows)
    title = f"sweep {name}: validation PSNR (dB) after {step} adaptation steps (* = best)"
    print(text_table(rows, keys, step, title), flush=True)
    write_csv(rows, keys, folder / "trials.csv")
    plot_curves(rows, folder / "val_psnr.png", f"sweep {name}", step)
    lines = [f"# Sweep {name}", "", f"space: `{space.source}` ({space.pipeline.name} pipeline), "
             f"{cfg.search} search, {cfg.scheduler} scheduler, {len(rows)} trials, "
             f"{sum(r.stopped_early for r in rows)} stopped early.", "",
             markdown_table(rows, keys, step), ""]  # fmt: skip
    grid = [k for k, spec in space.params.items() if spec.dist == "grid" and k != "run.seed"]
    if grid and len(rows) > 1:
        by = ", ".join(grid)
        lines += [f"## By {by}", "", grouped_table(rows, grid, step), ""]
    summary = SweepSummary(
        name=name,
        folder=str(folder),
        trials=len(rows),
        stopped_early=sum(r.stopped_early for r in rows),
        errors=sum(r.error is not None for r in rows),
        best=None,
    )
    if best is not None:
        best_cfg = space.trial_config(best.params)
        save_yaml(best_cfg, folder / "best_config.yaml")
        summary["best"] = {
            "trial_id": best.trial_id,
            "params": best.params,
            "val_psnr": best.val_psnr,
            "val_psnr_step1": best.val_psnr_step1,
            "rounds": best.rounds,
            "config": str(folder / "best_config.yaml"),
        }
        lines += [
            f"best: trial {best.trial_id}, val PSNR {best.val_psnr:.2f} dB; full config in "
            f"`best_config.yaml`, run it with `python pipelines/"
            f"{'city_nerf' if space.pipeline.name == 'city' else 'signals'}.py --config "
            f"{folder / 'best_config.yaml'}`."
        ]
    (folder / "results.md").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
