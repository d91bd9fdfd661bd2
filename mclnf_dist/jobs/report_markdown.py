"""The results report as markdown: the setup table, one table per section, the claims, pictures."""

import json
import time
from typing import Any

from mclnf_dist.evaluation.claims import claims
from mclnf_dist.evaluation.tables import format_table, ordered, results_table


def setup_table(done: list[tuple[Any, dict]]) -> str:
    """What each section ran: data, split, segments, field, budgets, wall time (markdown)."""
    header = [
        "section",
        "data",
        "meta-train / held-out",
        "segments",
        "field",
        "meta-training",
        "adaptation",
        "wall",
    ]
    rows = []
    for section, report in done:
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
                f"{c['train']['rounds']} rounds x {c['train']['rays_per_task']} rays/block, "
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
        adapt = c["adapt"]
        adaptation = f"{adapt['max_steps']} steps" + (
            f", batch {adapt['batch_size']}" if adapt.get("batch_size") else ""
        )
        wall = f"{report['wall_s']:.0f} s"
        rows.append([section.name, data, split, segments, field, training, adaptation, wall])
    return format_table(header, rows)


def city_held_out(report: dict) -> str:
    """PSNR and forgetting of every method on the city's held-out blocks (markdown)."""
    held = report["held_out_blocks"]
    last = report["config"]["adapt"]["max_steps"]
    rows = []
    for summary in ordered(report["results"]):
        h = held[summary["method"]]
        cells = [h["psnr_step1"], h[f"psnr_step{last}"], h["forgetting"]]
        rows.append([summary["method"], *("-" if c is None else f"{c:.2f}" for c in cells)])
    return format_table(["method", "PSNR@1", f"PSNR@{last}", "forgetting"], rows)


def render_markdown(cfg: Any, done: list[tuple[Any, dict]], wall: float) -> str:
    machine = done[0][1]["machine"] if done else {}
    command = "python pipelines/report.py" + {"quick": " --quick", "tiny": " --tiny"}.get(
        cfg.mode, ""
    )
    lines = [
        "# Results: meta-continual learning of neural fields on real data",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} in {wall / 60:.1f} minutes "
        f"({cfg.mode} budgets), seed {cfg.run.seed}, on {machine.get('platform', '?')} "
        f"({machine.get('processor', '?')}, torch {machine.get('torch', '?')}, "
        f"GPU: {machine.get('cuda') or 'none'}). Every number below comes from that one run; "
        "nothing is copied from the paper and nothing was tuned to make a claim hold. "
        "The MLflow runs hold the same numbers, curves and pictures.",
        "",
        "Methods, in the paper's groups: *offline* `random` (one network, random init, fitted on "
        "all segments at once); *continual* `finetune`, `ewc`, `replay` (one network, segments in "
        "order); *meta-offline* `maml` (one network from a MAML init); *meta-continual* `oml` "
        "(meta-learned representation, head adapted in order), `mod` (one module per segment from "
        "a meta-learned init), `mim` (`mod` + the FIM loss). PSNR is on held-out data (signals "
        "never meta-trained on; the city: held-out views), averaged over signals and segments. "
        "PSNR is capped at 120 dB (an MSE floor of 1e-12): a method that memorises a small signal "
        "exactly shows 120 as its best, so compare the early steps, not only the best.",
        "",
        "## Setup",
        "",
        setup_table(done),
        "",
        "## The paper's claims on this data",
        "",
        *claims(done),
        "",
    ]
    for section, report in done:
        summaries = report["results"]
        lines += [
            f"## {section.title}",
            "",
            results_table(
                summaries,
                title=f"PSNR (dB) on held-out data; MLflow run `{report.get('mlflow_run_id')}`",
                markdown=True,
                target=section.target_psnr,
            ),
            "",
        ]
        if section.pipeline == "city":
            lines += [
                "Blocks never meta-trained on (the headline comparison):",
                "",
                city_held_out(report),
                "",
            ]
        for name, path in report["pictures"].items():
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
    return json.dumps({s.name: r for s, r in done}, indent=1, default=str)
