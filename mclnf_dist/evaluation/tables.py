"""Results tables in the paper's layout (methods grouped as offline, continual, meta-...).

Tables are built from :meth:`MethodResult.summary` dicts (what ``results.json`` holds), so a
pipeline's console table and the results report render the very same numbers.
"""

import pandas as pd

from mclnf_dist.meta.methods import GROUPS


def format_table(header: list[str], rows: list[list[str]], markdown: bool = True) -> str:
    """A markdown (pipe) or plain-text table of already formatted cells, in the given order.

    Cells stay exactly as given (``disable_numparse``): the caller decides digits and units, so a
    PSNR of ``"30.10"`` is not turned into ``30.1``.
    """
    frame = pd.DataFrame(rows, columns=header)
    style = "pipe" if markdown else "simple"
    return frame.to_markdown(index=False, tablefmt=style, disable_numparse=True)


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
        return f"**{title}**\n\n" + grouped_markdown(header, rows)
    return f"{title}\n" + format_table(header, rows, markdown=False)


def grouped_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table without the group column; each group opens with its own italic row."""
    keep = [i for i, h in enumerate(header) if h != "group"]
    lines, group = [], None
    for row in rows:
        if row[1] != group:
            group = row[1]
            lines.append([f"*{group}*"] + [""] * (len(keep) - 1))
        lines.append([row[i] for i in keep])
    return format_table([header[i] for i in keep], lines)
