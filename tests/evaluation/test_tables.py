"""Results tables from pandas: the paper's order, group rows, and cells exactly as formatted."""

from mclnf_dist.evaluation.tables import format_table, results_table
from mclnf_dist.sweeps.report import TrialRow, grouped_table, markdown_table, text_table


def summary(method: str, group: str, psnr: float) -> dict:
    return {
        "method": method,
        "group": group,
        "params_per_signal": 1234,
        "psnr_step1": psnr - 10.0,
        "psnr_best": psnr,
        "best_step": 8,
        "psnr_last": psnr,
        "ssim_last": 0.5,
        "forgetting": None,
        "curve": {"1": psnr - 10.0, "8": psnr},
        "wall_time": {"1": 0.5, "8": 4.0},
    }


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_markdown_results_table_groups_methods_in_the_papers_order():
    summaries = [summary("mim", "meta-continual", 30.1), summary("random", "offline", 20.0)]
    text = results_table(summaries, "faces", markdown=True, target=25.0)
    title, blank, header, rule, *rows = text.splitlines()
    assert (title, blank) == ("**faces**", "")
    assert cells(header) == [
        "method", "params", "PSNR@1", "best (step)", "last", "SSIM", "forget", "time to 25 dB",
    ]  # fmt: skip
    assert set(rule) <= {"|", "-", ":"}
    assert [cells(r) for r in rows] == [
        ["*offline*", "", "", "", "", "", "", ""],
        ["random", "1234", "10.00", "20.00 (8)", "20.00", "0.500", "-", "not reached"],
        ["*meta-continual*", "", "", "", "", "", "", ""],
        ["mim", "1234", "20.10", "30.10 (8)", "30.10", "0.500", "-", "4.0 s (8)"],
    ]


def test_text_results_table_keeps_the_group_column():
    text = results_table([summary("mod", "meta-continual", 25.0)], "audio")
    title, header, rule, row = text.splitlines()
    assert title == "audio" and header.split()[:3] == ["method", "group", "params"]
    assert set(rule) <= {"-", " "} and row.split()[:3] == ["mod", "meta-continual", "1234"]


def test_sweep_tables_mark_the_best_trial_and_group_by_params():
    rows = [
        TrialRow("t1", {"lr": 0.1, "seed": 0}, 20.0, 10.0, 4, 4),
        TrialRow("t2", {"lr": 0.1, "seed": 1}, 22.0, 11.0, 4, 4),
        TrialRow("t3", {"lr": 0.01, "seed": 0}, 18.0, None, 2, 4),
    ]
    md = markdown_table(rows, ["lr", "seed"], 8).splitlines()
    assert cells(md[0]) == ["trial", "lr", "seed", "val PSNR@8", "val PSNR@1", "rounds", "status"]
    assert cells(md[3]) == ["t2*", "0.1", "1", "22.00", "11.00", "4/4", "completed"]
    assert cells(md[4])[-2:] == ["2/4", "stopped early"]
    assert text_table(rows, ["lr", "seed"], 8, "sweep").splitlines()[4].split()[0] == "t2*"
    grouped = grouped_table(rows, ["lr"], 8).splitlines()
    assert [cells(g) for g in grouped[2:]] == [
        ["0.01", "18.00", "-", "1"],
        ["0.1", "21.00 (20.00..22.00)", "10.50 (10.00..11.00)", "2"],
    ]


def test_format_table_keeps_cells_as_given():
    text = format_table(["a", "b"], [["1.50", "007"]])
    assert cells(text.splitlines()[2]) == ["1.50", "007"]
