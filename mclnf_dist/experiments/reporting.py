"""Results tables in the paper's layout (methods grouped as offline, continual, meta-...)."""

from mclnf_dist.eval import MethodResult
from mclnf_dist.meta.methods import GROUPS


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(results: list[MethodResult], title: str, markdown: bool = False) -> str:
    """A table: method, group, params, PSNR at step 1 / best (step) / last, SSIM, forgetting."""
    header = ["method", "group", "params", "PSNR@1", "best (step)", "last", "SSIM", "forget"]
    ordered = sorted(results, key=lambda r: (GROUPS.index(r.group), r.method))
    rows = []
    for r in ordered:
        best, step = r.best
        rows.append(
            [
                r.method,
                r.group,
                str(r.params_per_signal),
                _fmt(r.psnr_step1),
                f"{best:.2f} ({step})",
                _fmt(r.psnr_last),
                _fmt(r.ssim_last, 3),
                _fmt(r.forgetting),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return f"**{title}**\n\n" + "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([title, line, "-" * len(line), *body])
