"""The results report as markdown: the setup table, one table per section, the claims, pictures.

``done`` pairs each section with its entry over seeds (:func:`mclnf_dist.jobs.report.section_entry`:
``seeds``, ``runs`` (one pipeline report per seed), ``methods`` (aggregates), ``wall_s``,
``pictures``, ...). Numbers are shown as mean ± 95 % half-width over the seeds.
"""

import json
import math
import time
from collections.abc import Sequence
from typing import Any

from mclnf_dist.evaluation.claims import Scope, claims, claims_json
from mclnf_dist.evaluation.seeds import on_segments, per_seed
from mclnf_dist.evaluation.statistics import mean_ci
from mclnf_dist.evaluation.tables import format_table, grouped_markdown, ordered
from mclnf_dist.meta.methods import distinct_methods


def adaptation_plan(adapt: dict[str, Any]) -> str:
    """'128 steps, batch 512, Adam lr 0.001, SGD steps -1' from what the run's ``adapt`` config
    holds (read field by field: the fields a run carries depend on its version)."""
    parts = []
    if adapt.get("max_steps") is not None:
        parts.append(f"{adapt['max_steps']} steps")
    if adapt.get("batch_size"):
        parts.append(f"batch {adapt['batch_size']}")
    if adapt.get("adam_lr") is not None:
        parts.append(f"Adam lr {adapt['adam_lr']:g}")
    sgd = adapt.get("sgd_steps", adapt.get("meta_sgd_steps"))
    if sgd is not None:
        parts.append(f"SGD steps {'all' if sgd == -1 else sgd}")
    return ", ".join(parts) or "-"


def setup_table(done: list[tuple[Any, dict]]) -> str:
    """What each section ran: data, split, segments, field, budgets, seeds, wall time (markdown),
    from the first seed's run (the seeds share everything else)."""
    header = [
        "section",
        "data",
        "meta-train / held-out",
        "segments",
        "field",
        "meta-training",
        "adaptation",
        "seeds",
        "wall",
    ]
    rows = []
    for section, entry in done:
        report = entry["runs"][0]
        c = report["config"]
        meta = c["meta"]
        if section.pipeline == "city":
            blocks = report["blocks"]
            mlp = c["field"]["mlp"]
            data = f"demo city {c['data']['blocks_x']}x{c['data']['blocks_y']} blocks"
            split = f"blocks {blocks['meta_trained']} / {blocks['held_out']}"
            segments = f"{len(blocks['order'])} blocks"
            field = f"{mlp['kind']} {mlp['depth']}x{mlp['width']}, {c['field']['num_samples']} pts"
            training = (
                f"{c['meta']['outer_steps']} rounds x {c['train']['rays_per_task']} rays/block, "
                f"{meta['inner_steps']} inner steps"
            )
        else:
            d = report["data"]
            data = f"`{d['source']}` grid {d['grid']}"
            split = f"{d['num_train']} / {d['num_held_out']} signals"
            segments = str(d["segments"])
            field = f"{c['field']['kind']} {c['field']['depth']}x{c['field']['width']}"
            training = (
                f"{meta['outer_steps']} steps x {meta['meta_batch_size']} signals, "
                f"{meta['inner_steps']} inner steps"
            )
        adaptation = adaptation_plan(c.get("adapt", {}))
        seeds = ", ".join(str(s) for s in entry["seeds"])
        wall = f"{entry['wall_s']:.0f} s"
        rows.append([section.name, data, split, segments, field, training, adaptation, seeds, wall])
    return format_table(header, rows)


def interval(values: Sequence[float | None], digits: int = 2) -> str:
    """'30.12 ± 0.45' over the measured values ('30.12' from one value, '-' from none)."""
    measured = [v for v in values if v is not None]
    if not measured:
        return "-"
    mean, half = mean_ci(measured)
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def steps_cell(stats: dict[str, Any], seeds: int) -> str:
    """Steps to the target over every seed, mean ± half-width, a seed that never reached it
    counted as the budget (censored: then ">=" the mean) and named."""
    missed = stats["not_reached"]
    if missed == seeds:
        return "not reached"
    text = interval(stats["values"], digits=1)
    return f">= {text} ({missed}/{seeds} not reached: counted as the budget)" if missed else text


def seeds_table(entry: dict) -> str:
    """Every method's metrics over seeds, mean ± 95 % half-width, in the paper's groups."""
    first = {s["method"]: s for s in entry["runs"][0]["results"]}
    methods = entry["methods"]
    images = any(v is not None for m in methods.values() for v in m["ssim_last"]["values"])
    header = ["method", "group", "params", "PSNR@1", f"PSNR@{entry['early_step']}", "AUC", "last"]
    header += ["SSIM"] if images else []
    header += ["forget", f"steps to {entry['target_psnr']:g} dB"]
    rows = []
    for summary in ordered(list(first.values())):
        stats = methods[summary["method"]]
        row = [summary["method"], summary["group"], str(summary["params_per_signal"])]
        for name in ("psnr_step1", "psnr_at_16", "auc", "psnr_last"):
            row.append(interval(stats[name]["values"]))
        if images:
            row.append(interval(stats["ssim_last"]["values"], digits=3))
        row.append(interval(stats["forgetting"]["values"]))
        row.append(steps_cell(stats["steps_to_target"], len(entry["seeds"])))
        rows.append(row)
    return grouped_markdown(header, rows)


def city_held_out(entry: dict) -> str:
    """PSNR and forgetting of every method on the city's held-out blocks over seeds (markdown)."""
    runs = entry["runs"]
    last = runs[0]["config"]["adapt"]["max_steps"]
    rows = []
    for summary in ordered(runs[0]["results"]):
        held = [run["held_out_blocks"][summary["method"]] for run in runs]
        cells = [
            interval([h.get(key) for h in held])
            for key in ("psnr_step1", f"psnr_step{last}", "forgetting")
        ]
        rows.append([summary["method"], *cells])
    return format_table(["method", "PSNR@1", f"PSNR@{last}", "forgetting"], rows)


def judged_scopes(done: list[tuple[Any, dict]]) -> list[Scope]:
    """What the claims are judged on, per section, in every view the report ran: the shared
    plan, each method at its own best plan, and claim 1b at equal parameters (the one-network
    methods re-run at the modules' size; the unequal 1b rows then shown for scale only). The
    city's claims are judged on the blocks never meta-trained on (a meta-learned init's gain
    there is a claim about new blocks), its all-block numbers kept beside them for scale.
    Methods that are one configuration in a section (``mim`` is ``mod`` where the FIM weight
    is 0; only one of them ran) read "not tested"."""
    scopes = []
    for section, entry in done:
        main = entry["runs"]
        matched = entry.get("matched_runs")
        views: list[tuple[list[dict], dict[str, Any]]] = [(main, {})]
        if entry.get("own_plan_runs"):
            views.append((entry["own_plan_runs"], {"plan_view": "own"}))
        if matched:
            merged = [
                {**run, "results": [r for r in run["results"] if r["method"] not in MATCHED_METHODS]
                 + extra["results"]}
                for run, extra in zip(main, matched, strict=True)
            ]  # fmt: skip
            views.append((merged, {"param_matched": True, "claims": frozenset({"1b"})}))
        for runs, view in views:
            extra = dict(view)
            if matched and not view.get("param_matched"):
                extra["reference_claims"] = frozenset({"1b"})
            scopes += section_scopes(section, entry["seeds"], runs, extra)
    return scopes


MATCHED_METHODS = ("random", "maml", "oml")
"""The one-network methods claim 1b compares the modules with, re-run at the modules' parameter
count (``--param-match``) for the equal-parameter view."""


def section_scopes(section: Any, seeds: list[int], runs: list[dict], view: dict) -> list[Scope]:
    """One view of one section as scopes: signals on their held-out signals; the city on its
    never-meta-trained blocks (counted) and on all blocks (for scale)."""
    summaries = per_seed(runs, seeds)
    config = runs[0]["config"]
    _, twins = distinct_methods(config["methods"], float(config["fim"]["fim_lambda"]))
    common = dict(same_configuration=frozenset(frozenset(pair) for pair in twins.items()), **view)
    if section.pipeline != "city":
        signals = tuple(str(name) for name in runs[0].get("held_out") or ())
        return [
            Scope(section.name, summaries, f"{len(signals)} held-out signals", signals, **common)
        ]
    blocks = runs[0]["blocks"]
    positions = [blocks["order"].index(b) for b in blocks["held_out"]]
    held = {
        method: {seed: on_segments(s, positions) for seed, s in by_seed.items()}
        for method, by_seed in summaries.items()
    }
    never = tuple(str(b) for b in blocks["held_out"])
    every = tuple(str(b) for b in blocks["order"])
    return [
        Scope(
            section.name,
            held,
            f"blocks {', '.join(never)} (never meta-trained on)",
            never,
            **common,
        ),
        Scope(
            section.name,
            summaries,
            f"blocks {', '.join(every)} (all)",
            every,
            counted=False,
            **common,
        ),
    ]


def render_markdown(
    cfg: Any, done: list[tuple[Any, dict]], wall: float, extra: Sequence[str] = ()
) -> str:
    """The whole report. ``extra`` lines (more sections, in markdown) go after the claims,
    before the per-section tables."""
    machine = done[0][1]["runs"][0]["machine"] if done else {}
    command = "python pipelines/report.py" + {"quick": " --quick", "tiny": " --tiny"}.get(
        cfg.mode, ""
    )
    lines = [
        "# Results: meta-continual learning of neural fields on real data",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} in {wall / 60:.1f} minutes "
        f"({cfg.mode} budgets), seeds {', '.join(str(s) for s in cfg.seeds)} (every section run "
        f"once per seed), on {machine.get('platform', '?')} "
        f"({machine.get('processor', '?')}, torch {machine.get('torch', '?')}, "
        f"GPU: {machine.get('cuda') or 'none'}). Every number below comes from those runs, as "
        "mean ± 95 % half-width over the seeds (Student t); pictures show the first seed. "
        "Nothing is copied from the paper and nothing was tuned to make a claim hold. "
        "The MLflow runs hold the same numbers, curves and pictures.",
        "",
        "Methods, in the paper's groups: *offline* `random` (one network, random init, fitted on "
        "all segments at once); *continual* `finetune`, `ewc`, `replay` (one network, segments in "
        "order); *meta-offline* `maml` (one network from a MAML init); *meta-continual* `oml` "
        "(meta-learned representation, head adapted in order), `mod` (one module per segment from "
        "a meta-learned init), `mim` (`mod` + the FIM loss), `mod-random` (`mod` from a random "
        "init: the modules without meta-learning). PSNR is on held-out data (signals "
        "never meta-trained on; the city: held-out views), averaged over signals and segments. "
        "PSNR is capped at 120 dB (an MSE floor of 1e-12): a method that memorises a small signal "
        "exactly shows 120 at the end, so compare the early steps and the AUC (mean PSNR over the "
        "budget on a log2(step) axis), not only the last.",
        "",
        "## Setup",
        "",
        setup_table(done),
        "",
        "## The paper's claims on this data",
        "",
        *claims(judged_scopes(done)),
        "",
        *extra,
    ]
    for section, entry in done:
        mlflow = ", ".join(f"`{r.get('mlflow_run_id')}`" for r in entry["runs"])
        overlap = entry.get("overlap_fraction")
        lines += [
            f"## {section.title}",
            "",
            f"**PSNR (dB) on held-out data, mean ± 95 % half-width over seeds "
            f"{', '.join(str(s) for s in entry['seeds'])}; MLflow runs {mlflow}**",
            "",
            seeds_table(entry),
            "",
        ]
        if entry.get("own_plan_runs"):
            plans = entry["own_plan_runs"][0]["plans"]
            own = [
                f"`{m}` Adam {p['adam_lr']:g} after {p['sgd_steps']} SGD steps"
                + (" (re-run)" if p["rerun"] else "")
                for m, p in plans.items()
            ]
            lines += [
                "Each method's own best plan (plan study, validation AUC): " + "; ".join(own) + ".",
                "",
            ]
        config = entry["runs"][0]["config"]
        _, twins = distinct_methods(config["methods"], float(config["fim"]["fim_lambda"]))
        for name, twin in twins.items():
            lines += [f"`{name}` is `{twin}` in this section (FIM weight 0): not run.", ""]
        if overlap is not None:
            lines += [f"Largest train / held-out overlap found in any run: {overlap:.1%}.", ""]
        if section.pipeline == "city":
            lines += [
                "Blocks never meta-trained on (the headline comparison):",
                "",
                city_held_out(entry),
                "",
            ]
        for name, path in entry["pictures"].items():
            lines += [f"![{section.name} {name.replace('_', ' ')}]({path})", ""]
    lines += [
        "## Reproduce",
        "",
        f"`{command}` (one command; `--help` lists the options). Raw numbers of every section: "
        "[results/report.json](results/report.json).",
        "",
    ]
    return "\n".join(lines)


def report_json(done: list[tuple[Any, dict]]) -> str:
    """Per section: seeds, overlap, the per-method aggregates, every claim's comparison there,
    and the raw per-seed runs."""
    judged = claims_json(judged_scopes(done))
    out = {}
    for section, entry in done:
        out[section.name] = {
            **{k: v for k, v in entry.items() if k != "runs"},
            "claims": [c for c in judged if c["section"] == section.name],
            "runs": entry["runs"],
        }
    return json.dumps(out, indent=1, default=str)
