"""The paper's claims checked against a report's numbers: verdicts and their tables.

Each claim is judged per section from the sections' method summaries (``MethodResult.summary``);
a section is anything with a ``name``. The markdown around the verdicts is the report's
(:mod:`mclnf_dist.jobs.report_markdown`).
"""

from typing import Any

from mclnf_dist.evaluation.tables import format_table

EARLY_STEP = 16
"""The claim "modular + meta-learned init learns faster" is checked at step 1 and at this step."""


def psnr_at(summary: dict, step: int) -> float | None:
    """PSNR at checkpoint ``step`` (None when the run has no such checkpoint)."""
    return summary["curve"].get(str(step))


def early_step(summaries: dict[str, dict]) -> int:
    """``EARLY_STEP``, or the last checkpoint of a smaller budget."""
    last = min(max(int(k) for k in s["curve"]) for s in summaries.values())
    return min(EARLY_STEP, last)


def by_method(report: dict) -> dict[str, dict]:
    return {s["method"]: s for s in report["results"]}


def claims(done: list[tuple[Any, dict]]) -> list[str]:
    """The paper's three claims, checked per section, as markdown tables with a verdict each."""
    faster: list[list[str]] = []
    fim: list[list[str]] = []
    forgetters = ("mod", "mim", "finetune", "ewc", "replay", "oml")
    forget: list[list[str]] = []
    verdicts: dict[str, dict[str, list[str]]] = {"faster": {}, "fim": {}}
    worst_forgetting = 0.0
    for section, report in done:
        m = by_method(report)
        if not {"mod", "mim", "maml", "oml"} <= set(m):
            continue
        early = early_step(m)
        for step in sorted({1, early}):
            v = {k: psnr_at(m[k], step) for k in ("mod", "mim", "maml", "oml")}
            if any(x is None for x in v.values()):
                continue
            rival = max(v["maml"], v["oml"])
            verdict = (
                "holds"
                if min(v["mod"], v["mim"]) > rival
                else "partly (one of mod/mim)"
                if max(v["mod"], v["mim"]) > rival
                else "**does not hold**"
            )
            cells = [f"{v[k]:.2f}" for k in ("mod", "mim", "maml", "oml")]
            faster.append([section.name, str(step), *cells, verdict])
            verdicts["faster"].setdefault(section.name, []).append(verdict.strip("*"))
        diffs = [
            psnr_at(m["mim"], 1) - psnr_at(m["mod"], 1),
            psnr_at(m["mim"], early) - psnr_at(m["mod"], early),
            m["mim"]["psnr_best"] - m["mod"]["psnr_best"],
        ]
        verdict = (
            "helps"
            if all(d > 0 for d in diffs)
            else "mixed"
            if any(d > 0 for d in diffs)
            else "**does not help**"
        )
        verdicts["fim"][section.name] = [verdict.strip("*")]
        fim.append(
            [
                section.name,
                f"{diffs[0]:+.2f}",
                f"{diffs[1]:+.2f} (step {early})",
                f"{diffs[2]:+.2f}",
                verdict,
            ]
        )
        cells = [m[k]["forgetting"] if k in m else None for k in forgetters]
        worst_forgetting = max([worst_forgetting, *(c for c in cells[2:] if c is not None)])
        forget.append([section.name, *("-" if c is None else f"{c:.2f}" for c in cells)])
    modular = [m for _, r in done for m in r["results"] if m["method"] in ("mod", "mim")]
    no_forgetting = all(m["forgetting"] == 0.0 for m in modular)
    return [
        "In short:",
        "",
        f"- modular + meta-learned init learns faster than MAML and OML: "
        f"{in_short(verdicts['faster'])}",
        f"- the FIM loss helps: {in_short(verdicts['fim'])}",
        f"- no forgetting: mod and mim forget "
        f"{'nothing on every section' if no_forgetting else 'on some section (see below)'}; the "
        f"one-network continual methods lose up to {worst_forgetting:.1f} dB",
        "",
        "### 1. Modular + meta-learned init learns faster than MAML and OML",
        "",
        f"PSNR (dB) on held-out data after 1 and {EARLY_STEP} adaptation steps (the last "
        "checkpoint when the budget is smaller). *holds*: both mod and mim beat the better of maml "
        "and oml.",
        "",
        format_table(["section", "step", "mod", "mim", "maml", "oml", "verdict"], faster),
        "",
        "### 2. The FIM loss helps",
        "",
        "mim (modules + meta-learned init + FIM loss) minus mod (the same with plain MSE), dB.",
        "",
        format_table(["section", "mim - mod @1", "@early step", "best", "verdict"], fim),
        "",
        "### 3. No forgetting",
        "",
        "Mean PSNR drop (dB) of earlier segments between when they were learned and the end of the "
        "stream (modules are frozen once their segment has passed, so mod/mim are 0 by "
        "construction; the continual baselines share one network).",
        "",
        format_table(["section", *forgetters], forget),
    ]


def in_short(verdicts: dict[str, list[str]]) -> str:
    """'holds on faces, photos; does not hold on city' from per-section verdicts."""
    by_verdict: dict[str, list[str]] = {}
    for section, found in verdicts.items():
        overall = found[0] if len(set(found)) == 1 else "partly holds"
        by_verdict.setdefault(overall, []).append(section)
    parts = [f"{verdict} on {', '.join(sections)}" for verdict, sections in by_verdict.items()]
    return "; ".join(parts) if parts else "not measured"
