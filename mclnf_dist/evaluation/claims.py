"""The paper's claims judged over seeds: paired differences, their 95 % intervals and verdicts.

Every claim compares methods run with the same seeds, per section (a data set), through the paired
difference of a metric (:func:`~mclnf_dist.evaluation.statistics.paired_difference`); a comparison
"holds" only when the interval of the mean difference lies above zero AND its p-value, corrected
over every counted comparison of the report (Benjamini-Hochberg, false discovery rate 5 %), is
below 0.05. The baselines that start from a random init (``random``: one network;
``mod-random``: one module per segment) appear in every claim, so a gain can always be read
against "no meta-learning at all".

What a comparison is judged on is a :class:`Scope`: a section's runs restricted to what the claim
is about (the city: the blocks never meta-trained on), the adaptation plan they ran under, and
whether the one-network methods were widened to the modules' parameter count. A comparison of two
methods that are one configuration in a section (``mim`` with the FIM weight at 0 is ``mod``)
reads "not tested".
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from mclnf_dist.evaluation.seeds import (
    EARLY_STEP,
    SeedSummaries,
    early_step,
    finite_or_none,
    values_by_seed,
)
from mclnf_dist.evaluation.statistics import (
    CONFIDENCE,
    Interval,
    benjamini_hochberg,
    mean_ci,
    paired_difference,
    verdict,
)
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


OTHERS_THAN_MOD = ("random", "finetune", "ewc", "replay", "mod-random", "maml", "oml")
"""Every method ``mod`` is an alternative to (``mim`` is ``mod`` plus the FIM loss: claim 2)."""

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
        tuple(("mod", other) for other in OTHERS_THAN_MOD),
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
"""One frozen module per segment: forgetting is 0 unless a prediction reads later modules
(measured, :func:`~mclnf_dist.evaluation.protocol.arrival_matrix`)."""


@dataclass(frozen=True)
class Scope:
    """The runs one section's claims are judged on, and what they are about."""

    section: str
    summaries: SeedSummaries
    judged: str = "held-out data"
    """What the numbers cover, in words, e.g. ``"blocks 4, 5 (never meta-trained on)"``."""
    items: tuple[str, ...] = ()
    """The blocks or signals judged, by name (``report.json``'s ``judged_items``)."""
    counted: bool = True
    """False: rows shown beside the counted ones for scale (e.g. the city's all-block numbers)."""
    plan_view: str = "shared"
    """``shared``: every method under the one adaptation plan; ``own``: each at its own best."""
    param_matched: bool = False
    """The one-network methods widened to the modules' parameter count (``--param-match``)."""
    same_configuration: frozenset[frozenset[str]] = frozenset()
    """Method pairs that are one configuration in this section: their comparisons are "not
    tested" (e.g. ``{"mim", "mod"}`` when the FIM weight is 0)."""
    claims: frozenset[str] | None = None
    """The claims judged on this scope (None: every claim)."""
    reference_claims: frozenset[str] = frozenset()
    """Claims judged here for scale only (e.g. 1b at unequal parameters, when an
    equal-parameter scope judges it)."""

    @property
    def where(self) -> str:
        """The section and view a verdict is about: ``faces``, ``faces (own plans)``,
        ``faces (equal parameters)``."""
        views = ["own plans"] if self.plan_view == "own" else []
        views += ["equal parameters"] if self.param_matched else []
        return f"{self.section} ({', '.join(views)})" if views else self.section


@dataclass(frozen=True)
class Comparison:
    """``better - worse`` on ``metric`` over the seeds both ran, judged on ``scope``."""

    claim: str
    better: str
    worse: str
    metric: str
    difference: Interval | None
    """None: one of the two methods did not run in this section."""
    scope: Scope = dataclasses.field(repr=False)
    counted: bool = True
    p_adjusted: float | None = None
    """The p-value corrected over the report's counted comparisons (None: not in the family)."""

    @property
    def section(self) -> str:
        return self.scope.section

    @property
    def tested(self) -> bool:
        """False: the two methods are one configuration in this scope (verdict "not tested")."""
        return frozenset((self.better, self.worse)) not in self.scope.same_configuration

    @property
    def verdict(self) -> str:
        if not self.tested:
            return "not tested"
        if self.difference is None:
            return "not measured"
        return verdict(self.difference.lo, self.difference.hi, self.p_adjusted)

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
            "p": None if d is None else d.p,
            "p_adjusted": self.p_adjusted,
            "verdict": self.verdict,
            "counted": self.counted,
            "judged": self.scope.judged,
            "judged_items": list(self.scope.items),
            "plan_view": self.scope.plan_view,
            "param_matched": self.scope.param_matched,
        }


def judge(scope: Scope) -> list[Comparison]:
    """Every comparison of every claim on one scope, unadjusted (the target PSNR plays no part);
    :func:`judge_all` corrects a report's comparisons together."""
    summaries = scope.summaries
    early = early_step(summaries)
    found = []
    for claim in CLAIMS:
        if scope.claims is not None and claim.key not in scope.claims:
            continue
        counts = scope.counted and claim.key not in scope.reference_claims
        rows = [(p, m, counts) for p in claim.pairs for m in claim.metrics]
        rows += [(p, "auc", False) for p in claim.reference]
        for (better, worse), name, counted in rows:
            a = values_by_seed(summaries, better, name, early, 0.0)
            b = values_by_seed(summaries, worse, name, early, 0.0)
            diff = paired_difference(a, b)
            found.append(Comparison(claim.key, better, worse, name, diff, scope, counted))
    return found


def in_family(c: Comparison) -> bool:
    """Counted, tested and measured: what the multiplicity correction runs over."""
    return c.counted and c.tested and c.difference is not None


def judge_all(scopes: list[Scope]) -> list[Comparison]:
    """Every scope's comparisons, the counted ones' p-values corrected together
    (Benjamini-Hochberg over the whole report: one family)."""
    found = [c for scope in scopes for c in judge(scope)]
    family = [i for i, c in enumerate(found) if in_family(c)]
    adjusted = benjamini_hochberg([found[i].difference.p for i in family])  # type: ignore[union-attr]
    for i, p in zip(family, adjusted, strict=True):
        found[i] = dataclasses.replace(found[i], p_adjusted=p)
    return found


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its comparisons': "holds" only if every one holds, "reversed" if
    every one is reversed, "partly reversed" if any is, "partly holds" if some hold and the rest
    are inconclusive; comparisons not measured or not tested are left out."""
    found = [v for v in verdicts if v not in ("not measured", "not tested")]
    if not found:
        return "not tested" if "not tested" in verdicts else "not measured"
    if all(v == "holds" for v in found):
        return "holds"
    if all(v == "reversed" for v in found):
        return "reversed"
    if "reversed" in found:
        return "partly reversed"
    return "partly holds" if "holds" in found else "inconclusive"


def claim_verdicts(comparisons: list[Comparison]) -> dict[str, dict[str, str]]:
    """claim -> where (section and view) -> the claim's combined verdict there (counted
    comparisons only)."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for c in comparisons:
        if c.counted:
            grouped.setdefault(c.claim, {}).setdefault(c.scope.where, []).append(c.verdict)
    return {k: {s: combine(v) for s, v in by.items()} for k, by in grouped.items()}


def plan_sensitivity(scopes: list[Scope], verdicts: dict[str, dict[str, str]]) -> str:
    """In words, which claims' verdicts change between the shared plan and each method's own
    best plan (both chosen on validation data), per section."""
    own = [s for s in scopes if s.plan_view == "own" and s.counted]
    if not own:
        return "not measured (only the shared plan was run)"
    changes, same = [], 0
    for scope in own:
        shared = dataclasses.replace(scope, plan_view="shared").where
        for claim in CLAIMS:
            by_where = verdicts.get(claim.key, {})
            if scope.where not in by_where or shared not in by_where:
                continue
            if by_where[scope.where] == by_where[shared]:
                same += 1
            else:
                changes.append(
                    f"{claim.key} on {scope.section} ({by_where[shared]} under the shared plan, "
                    f"{by_where[scope.where]} at each method's own)"
                )
    if not changes:
        return f"no verdict changes with the plan ({same} compared)"
    return f"{len(changes)} of {len(changes) + same} verdicts change with the plan: " + "; ".join(
        changes
    )


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
    cells = ["-", "-", "-", "-"] if d is None or not c.tested else [str(d.n), signed(d.mean)]
    if d is not None and c.tested:
        cells.append(f"[{signed(d.lo)}, {signed(d.hi)}]")
        cells.append("-" if c.p_adjusted is None else f"{c.p_adjusted:.3f}")
    label = c.verdict if c.counted else f"({c.verdict}; reference)"
    return [
        c.scope.where,
        c.scope.judged,
        f"{c.better} - {c.worse}",
        metric[c.metric],
        *cells,
        label,
    ]


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
        "mod, mim and mod-random forget 0 (measured: every earlier segment re-scored after each "
        "later one arrived; their modules are frozen and no prediction reads a later module)"
        if not nonzero_frozen
        else "the frozen-module methods' earlier segments change after later ones arrive on "
        f"{', '.join(nonzero_frozen)} (measured by re-scoring: a prediction there reads later "
        "modules too, e.g. a city ray crossing a later block)"
    )
    lose = (
        "not measured" if worst is None else f"lose up to {worst[0]:.2f} dB on average ({worst[1]})"
    )
    sentence = (
        f"the one-network continual methods {lose}; their forgetting is above 0 beyond doubt "
        f"(interval above 0) for: {', '.join(forgets) or 'none'}; {frozen}"
    )
    return format_table(["section", *methods], rows), sentence


def claims(scopes: list[Scope]) -> list[str]:
    """The paper's claims per section over seeds, as markdown: an "In short" list, then a table
    of every paired difference (mean, 95 % interval, corrected p, verdict) per claim, then
    forgetting."""
    comparisons = judge_all(scopes)
    early = {scope.section: early_step(scope.summaries) for scope in scopes}
    verdicts = claim_verdicts(comparisons)
    counted = [
        (scope.section, scope.summaries)
        for scope in scopes
        if scope.counted and scope.plan_view == "shared" and not scope.param_matched
    ]
    forget_table, forget_sentence = forgetting_table(counted)
    family = sum(in_family(c) for c in comparisons)
    lines = ["In short (per section, over seeds):", ""]
    for claim in CLAIMS:
        lines.append(f"- {claim.key}. {claim.statement}: {in_short(verdicts.get(claim.key, {}))}")
    lines += [
        f"- 3. forgetting: {forget_sentence}",
        f"- plan sensitivity: {plan_sensitivity(scopes, verdicts)}",
        "",
        "Each row is a paired difference over seeds (the same seed for both methods), dB: its mean "
        "and 95 % Student-t interval, and the p-value of a paired t test corrected over all "
        f"{family} counted rows of this report (Benjamini-Hochberg: at most 5 % of the rows "
        "called *holds* or *reversed* are expected to be wrong). *holds*: the interval lies above "
        f"0 and the corrected p is below {1 - CONFIDENCE:.2f}; *reversed*: the same below 0; "
        "*inconclusive*: otherwise; *not tested*: the two methods are one configuration in that "
        "section (no run made; `mim` is `mod` where the section's FIM study found no FIM weight "
        "beating MSE on validation data, so its recipe ships MSE: that study is claim 2's test "
        "there). One seed gives no interval, so a claim needs >= 2 seeds to "
        "be anything but inconclusive. A claim holds in a section only if every counted row "
        f"does. PSNR@{EARLY_STEP} is taken at the last checkpoint when the budget is smaller; AUC "
        "is the mean PSNR over the budget on a log2(step) axis (early steps weigh as much as "
        "late ones). `random` and `mod-random` start from a random init (one network; one module "
        "per segment). *judged on*: what the numbers cover; rows marked *reference* are shown "
        "for scale and count towards nothing.",
        "",
    ]
    header = ["section", "judged on", "difference", "metric", "seeds", "mean", "95 % interval"]
    header += ["p (corrected)", "verdict"]
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


def claims_json(scopes: list[Scope]) -> list[dict[str, Any]]:
    """Every comparison as a JSON-ready dict (what report.json keeps next to the tables)."""
    return [c.as_dict() for c in judge_all(scopes)]
