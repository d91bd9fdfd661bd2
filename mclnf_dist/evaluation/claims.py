"""The paper's claims judged over seeds: paired differences, their 95 % intervals and verdicts.

Every claim compares methods run with the same seeds, per section (a data set), through the paired
difference of a metric (:func:`~mclnf_dist.evaluation.statistics.paired_difference`); a comparison
"holds" only when the interval of the mean difference lies above zero. The baselines that start
from a random init (``random``: one network; ``mod-random``: one module per segment) appear in
every claim, so a gain can always be read against "no meta-learning at all".
"""

from dataclasses import dataclass
from typing import Any

from mclnf_dist.evaluation.seeds import (
    EARLY_STEP,
    SeedSummaries,
    early_step,
    finite_or_none,
    values_by_seed,
)
from mclnf_dist.evaluation.statistics import Interval, mean_ci, paired_difference, verdict
from mclnf_dist.evaluation.tables import format_table


@dataclass(frozen=True)
class Claim:
    """One claim: ``better`` minus ``worse`` should be positive on each of ``metrics``."""

    key: str
    statement: str
    pairs: tuple[tuple[str, str], ...]
    metrics: tuple[str, ...]
    reference: tuple[tuple[str, str], ...] = ()
    """Pairs shown for scale (at AUC) that do not count towards the verdict."""


CLAIMS = (
    Claim(
        "1a",
        "a meta-learned init adapts faster",
        (("mod", "mod-random"), ("maml", "random")),
        ("psnr_step1", "psnr_at_16", "auc"),
    ),
    Claim(
        "1b",
        "modules beat one network",
        (("mod", "maml"), ("mod", "oml"), ("mod-random", "random")),
        ("psnr_at_16", "auc"),
    ),
    Claim(
        "overall",
        "modular + meta-learned init learns faster than every alternative",
        (("mod", "random"), ("mod", "mod-random"), ("mod", "maml"), ("mod", "oml")),
        ("auc",),
    ),
    Claim(
        "2",
        "the FIM loss helps",
        (("mim", "mod"),),
        ("psnr_step1", "psnr_at_16", "auc"),
        reference=(("mim", "mod-random"), ("mim", "random")),
    ),
)
FORGETTERS = ("finetune", "ewc", "replay", "oml")
"""One network learns the segments in order: what it forgets is a learning result."""
FROZEN = ("mod", "mim", "mod-random")
"""One frozen module per segment: forgetting is 0 by construction."""


@dataclass(frozen=True)
class Comparison:
    """``better - worse`` on ``metric`` in one section, over the seeds both ran."""

    claim: str
    section: str
    better: str
    worse: str
    metric: str
    difference: Interval | None
    """None: one of the two methods did not run in this section."""
    counted: bool = True

    @property
    def verdict(self) -> str:
        if self.difference is None:
            return "not measured"
        return verdict(self.difference.lo, self.difference.hi)

    def as_dict(self) -> dict[str, Any]:
        d = self.difference
        return {
            "claim": self.claim,
            "section": self.section,
            "difference": f"{self.better} - {self.worse}",
            "metric": self.metric,
            "mean": None if d is None else d.mean,
            "lo": None if d is None else finite_or_none(d.lo),
            "hi": None if d is None else finite_or_none(d.hi),
            "n": 0 if d is None else d.n,
            "verdict": self.verdict,
            "counted": self.counted,
        }


def judge(section: str, summaries: SeedSummaries) -> list[Comparison]:
    """Every comparison of every claim in one section (the target PSNR plays no part)."""
    early = early_step(summaries)
    found = []
    for claim in CLAIMS:
        rows = [(p, m, True) for p in claim.pairs for m in claim.metrics]
        rows += [(p, "auc", False) for p in claim.reference]
        for (better, worse), name, counted in rows:
            a = values_by_seed(summaries, better, name, early, 0.0)
            b = values_by_seed(summaries, worse, name, early, 0.0)
            diff = paired_difference(a, b)
            found.append(Comparison(claim.key, section, better, worse, name, diff, counted))
    return found


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its comparisons': "holds" only if every one holds, "reversed" if
    every one is reversed, "partly reversed" if any is, "partly holds" if some hold and the rest
    are inconclusive; comparisons not measured are left out."""
    found = [v for v in verdicts if v != "not measured"]
    if not found:
        return "not measured"
    if all(v == "holds" for v in found):
        return "holds"
    if all(v == "reversed" for v in found):
        return "reversed"
    if "reversed" in found:
        return "partly reversed"
    return "partly holds" if "holds" in found else "inconclusive"


def claim_verdicts(comparisons: list[Comparison]) -> dict[str, dict[str, str]]:
    """claim -> section -> the claim's combined verdict there (counted comparisons only)."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for c in comparisons:
        if c.counted:
            grouped.setdefault(c.claim, {}).setdefault(c.section, []).append(c.verdict)
    return {k: {s: combine(v) for s, v in by.items()} for k, by in grouped.items()}


def in_short(by_section: dict[str, str]) -> str:
    """'holds on faces, photos; inconclusive on city' from section -> verdict."""
    by_verdict: dict[str, list[str]] = {}
    for section, found in by_section.items():
        by_verdict.setdefault(found, []).append(section)
    parts = [f"{verdict} on {', '.join(sections)}" for verdict, sections in by_verdict.items()]
    return "; ".join(parts) if parts else "not measured"


def signed(value: float) -> str:
    return f"{value:+.2f}"


def comparison_row(c: Comparison, early: dict[str, int]) -> list[str]:
    metric = {"psnr_step1": "PSNR@1", "psnr_at_16": f"PSNR@{early[c.section]}", "auc": "AUC"}
    d = c.difference
    cells = ["-", "-", "-"] if d is None else [str(d.n), signed(d.mean)]
    if d is not None:
        cells.append(f"[{signed(d.lo)}, {signed(d.hi)}]")
    label = c.verdict if c.counted else f"({c.verdict}; reference)"
    return [c.section, f"{c.better} - {c.worse}", metric[c.metric], *cells, label]


def forgetting_table(sections: list[tuple[str, SeedSummaries]]) -> tuple[str, list[str]]:
    """Mean +- half-width of forgetting (dB) per method and section, and the in-short sentence."""
    methods = ("random", *FORGETTERS, *FROZEN)
    rows: list[list[str]] = []
    worst: tuple[float, str] | None = None
    forgets: list[str] = []
    nonzero_frozen: list[str] = []
    for section, summaries in sections:
        row = [section]
        for method in methods:
            values = values_by_seed(summaries, method, "forgetting", 0, 0.0)
            measured = [v for v in values.values() if v is not None]
            if not measured:
                row.append("-")
                continue
            mean, half = mean_ci(measured)
            row.append(f"{mean:.2f} ± {half:.2f}")
            if method in FROZEN and any(v != 0.0 for v in measured):
                nonzero_frozen.append(f"{method} on {section}")
            if method in FORGETTERS:
                if worst is None or mean > worst[0]:
                    worst = (mean, f"{method} on {section}")
                if mean - half > 0:
                    forgets.append(f"{method} on {section}")
        rows.append(row)
    frozen = (
        "mod, mim and mod-random forget 0 by construction (their modules are frozen once "
        "their segment has passed; not a learning result)"
        if not nonzero_frozen
        else f"the frozen-module methods DO forget on {', '.join(nonzero_frozen)} (a bug to find)"
    )
    lose = (
        "not measured" if worst is None else f"lose up to {worst[0]:.2f} dB on average ({worst[1]})"
    )
    sentence = (
        f"the one-network continual methods {lose}; their forgetting is above 0 beyond doubt "
        f"(interval above 0) for: {', '.join(forgets) or 'none'}; {frozen}"
    )
    return format_table(["section", *methods], rows), sentence


def claims(sections: list[tuple[str, SeedSummaries]]) -> list[str]:
    """The paper's claims per section over seeds, as markdown: an "In short" list, then a table
    of every paired difference (mean, 95 % interval, verdict) per claim, then forgetting."""
    comparisons = [c for name, summaries in sections for c in judge(name, summaries)]
    early = {name: early_step(summaries) for name, summaries in sections}
    verdicts = claim_verdicts(comparisons)
    forget_table, forget_sentence = forgetting_table(sections)
    lines = ["In short (per section, over seeds):", ""]
    for claim in CLAIMS:
        lines.append(f"- {claim.key}. {claim.statement}: {in_short(verdicts.get(claim.key, {}))}")
    lines += [
        f"- 3. forgetting: {forget_sentence}",
        "",
        "Each row is a paired difference over seeds (the same seed for both methods), dB: its mean "
        "and 95 % Student-t interval. *holds*: the interval lies above 0; *reversed*: below 0; "
        "*inconclusive*: it covers 0. One seed gives no interval, so a claim needs >= 2 seeds to "
        "be anything but inconclusive. A claim holds in a section only if every counted row "
        f"does. PSNR@{EARLY_STEP} is taken at the last checkpoint when the budget is smaller; AUC "
        "is the mean PSNR over the budget on a log2(step) axis (early steps weigh as much as "
        "late ones). `random` and `mod-random` start from a random init (one network; one module "
        "per segment).",
        "",
    ]
    header = ["section", "difference", "metric", "seeds", "mean", "95 % interval", "verdict"]
    for claim in CLAIMS:
        rows = [comparison_row(c, early) for c in comparisons if c.claim == claim.key]
        title = f"{claim.key}. " if claim.key[0].isdigit() else f"{claim.key.capitalize()}: "
        lines += [f"### {title}{claim.statement[0].upper()}{claim.statement[1:]}", ""]
        lines += [format_table(header, rows), ""]
    lines += [
        "### 3. No forgetting",
        "",
        "Mean PSNR drop (dB) of earlier segments between when they were learned and the end of the "
        "stream, mean ± 95 % half-width over seeds. "
        + forget_sentence[0].upper()
        + forget_sentence[1:]
        + ".",
        "",
        forget_table,
    ]
    return lines


def claims_json(sections: list[tuple[str, SeedSummaries]]) -> list[dict[str, Any]]:
    """Every comparison as a JSON-ready dict (what report.json keeps next to the tables)."""
    return [c.as_dict() for name, summaries in sections for c in judge(name, summaries)]
