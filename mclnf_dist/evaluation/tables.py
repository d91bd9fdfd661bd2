"""Results tables in the paper's layout (methods grouped as offline, continual, meta-...).

Tables are built from :meth:`MethodResult.summary` dicts (what ``results.json`` holds), so a
pipeline's console table and the results report render the very same numbers.
"""

from mclnf_dist.meta.methods import GROUPS


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def time_to_psnr(summary: dict, target: float) -> tuple[float, int] | None:
    """(wall seconds, step) at the first checkpoint whose PSNR reaches ``target``, or None."""
    for step in sorted(summary["curve"], key=int):
        if summary["curve"][step] >= target:
            return summary["wall_time"][step], int(step)
    return None


def ordered(summaries: list[dict]) -> list[dict]:
    """The paper's order: by group (offline, continual, meta-offline, meta-continual), then name."""
    return sorted(summaries, key=lambda s: (GROUPS.index(s["group"]), s["method"]))


def results_table(
    summaries: list[dict], title: str, markdown: bool = False, target: float | None = None
) -> str:
    """Method, group, params, PSNR at step 1 / best (step) / last, SSIM, forgetting, and (given a
    ``target``) the wall time to reach it. Markdown tables get a header row per method group."""
    header = ["method", "group", "params", "PSNR@1", "best (step)", "last", "SSIM", "forget"]
    if target is not None:
        header.append(f"time to {target:g} dB")
    rows: list[list[str]] = []
    for s in ordered(summaries):
        row = [
            s["method"],
            s["group"],
            str(s["params_per_signal"]),
            _fmt(s["psnr_step1"]),
            f"{s['psnr_best']:.2f} ({s['best_step']})",
            _fmt(s["psnr_last"]),
            _fmt(s["ssim_last"], 3),
            _fmt(s["forgetting"]),
        ]
        if target is not None:
            reached = time_to_psnr(s, target)
            row.append("not reached" if reached is None else f"{reached[0]:.1f} s ({reached[1]})")
        rows.append(row)
    if markdown:
        return f"**{title}**\n\n" + _markdown(header, rows)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([title, line, "-" * len(line), *body])


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table without the group column; each group opens with its own bold row."""
    keep = [i for i, h in enumerate(header) if h != "group"]
    lines = [
        "| " + " | ".join(header[i] for i in keep) + " |",
        "|" + "---|" * len(keep),
    ]
    group = None
    for row in rows:
        if row[1] != group:
            group = row[1]
            lines.append(f"| *{group}* |" + " |" * (len(keep) - 1))
        lines.append("| " + " | ".join(row[i] for i in keep) + " |")
    return "\n".join(lines)
