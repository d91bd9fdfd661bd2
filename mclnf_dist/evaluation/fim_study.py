"""The FIM study: does the FIM loss beat plain MSE, and where should it enter?

Input: per modality the ``trials.csv`` of a ``tune_spaces/fim_<modality>.yaml`` sweep (grid
``fim.fim_lambda`` x ``fim.apply_to`` x ``run.seed``, validation PSNR on signals held back from
meta-training, :func:`mclnf_dist.sweeps.report.write_csv`). Output: per modality a table of the
validation PSNR, mean over seeds (and min..max), for every (lambda, apply_to), and the winner.

``fim_lambda = 0`` is exactly MSE whatever ``apply_to`` says, so its trials are pooled into one
baseline. A FIM config wins only when its mean beats the baseline's by more than the seed spread
(the larger of the two configs' max - min over seeds): a difference the seeds alone produce is no
evidence, and then the study says ``MSE`` (ship ``fim_lambda = 0``).
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.tables import format_table

PLACEMENTS = ("inner", "outer", "both")
LAMBDA_KEY, PLACEMENT_KEY, SEED_KEY = "fim.fim_lambda", "fim.apply_to", "run.seed"


@dataclass(frozen=True)
class FimScore:
    """Validation PSNR (dB) of one (lambda, apply_to) over its seeds."""

    fim_lambda: float
    apply_to: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values)

    def cell(self) -> str:
        if len(self.values) == 1:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ({min(self.values):.2f}..{max(self.values):.2f})"

    @property
    def name(self) -> str:
        return f"fim_lambda={self.fim_lambda:g}, apply_to={self.apply_to}"


def trials_file(path: Path) -> Path:
    """A sweep folder or its ``trials.csv`` (or a copy of it) -> the CSV file."""
    path = Path(path)
    return path / "trials.csv" if path.is_dir() else path


def read_scores(path: Path) -> tuple[FimScore | None, list[FimScore]]:
    """(the pooled ``fim_lambda = 0`` baseline, every ``fim_lambda > 0`` config) of one sweep.

    Trials that failed or stopped early are left out (their PSNR is not the full budget's)."""
    file = trials_file(path)
    if not file.exists():
        raise MclnfError(f"{file}: no such sweep results file (expected a sweep's trials.csv)")
    with open(file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [k for k in (LAMBDA_KEY, PLACEMENT_KEY, "val_psnr") if rows and k not in rows[0]]
    if missing:
        raise MclnfError(
            f"{file}: columns {missing} missing (expected a fim_<modality>.yaml sweep's trials.csv)"
        )
    groups: dict[tuple[float, str], list[float]] = {}
    for row in rows:
        if row.get("status", "completed") != "completed" or not row["val_psnr"]:
            continue
        lam = float(row[LAMBDA_KEY])
        key = (0.0, "any") if lam == 0 else (lam, row[PLACEMENT_KEY])
        groups.setdefault(key, []).append(float(row["val_psnr"]))
    scores = {key: FimScore(key[0], key[1], tuple(v)) for key, v in groups.items()}
    baseline = scores.pop((0.0, "any"), None)
    return baseline, sorted(scores.values(), key=lambda s: (s.fim_lambda, s.apply_to))


def winner(baseline: FimScore | None, configs: list[FimScore]) -> FimScore | None:
    """The best FIM config that beats MSE by more than the seed spread; None: MSE wins."""
    if baseline is None:
        raise MclnfError(
            "the sweep has no completed fim_lambda=0 trial (expected the MSE baseline)"
        )
    beating = [s for s in configs if s.mean - baseline.mean > max(s.spread, baseline.spread)]
    return max(beating, key=lambda s: s.mean) if beating else None


def fim_study_markdown(results_paths: dict[str, Path]) -> list[str]:
    """Markdown lines: per modality, val PSNR by (lambda, apply_to) and the winner (or MSE).

    Args:
        results_paths: modality -> its sweep's ``trials.csv`` (or the sweep folder holding it).
    """
    lines: list[str] = []
    for modality, path in results_paths.items():
        baseline, configs = read_scores(path)
        best = winner(baseline, configs)
        by_cell = {(s.fim_lambda, s.apply_to): s for s in configs}
        rows = [["0 (MSE)", *[baseline.cell()] * len(PLACEMENTS)]]
        for lam in sorted({s.fim_lambda for s in configs}):
            cells = [by_cell[(lam, p)].cell() if (lam, p) in by_cell else "-" for p in PLACEMENTS]
            rows.append([f"{lam:g}", *cells])
        largest = max((s.fim_lambda for s in configs), default=0.0)
        edge = (
            f"; at the edge of the grid (the largest fim_lambda, {largest:g}): widen it"
            if best is not None and best.fim_lambda == largest
            else ""
        )
        verdict = (
            f"winner: {best.name} ({best.mean:.2f} dB vs MSE {baseline.mean:.2f} dB){edge}"
            if best is not None
            else f"winner: MSE (no fim_lambda > 0 beats MSE's {baseline.mean:.2f} dB by more "
            "than the seed spread)"
        )
        lines += [
            f"## {modality}",
            "",
            f"Validation PSNR (dB), mean (min..max) over seeds; fim_lambda 0 pools its "
            f"{len(baseline.values)} trials (MSE whatever apply_to says); "
            f"`{trials_file(path)}`.",
            "",
            *format_table(["fim_lambda", *PLACEMENTS], rows).splitlines(),
            "",
            verdict,
            "",
        ]
    return lines
