import pytest

from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.fim_study import fim_study_markdown, read_scores, winner
from mclnf_dist.sweeps.report import TrialRow, write_csv

KEYS = ["fim.fim_lambda", "fim.apply_to", "run.seed"]


def write_sweep(path, psnr):
    """A fim_<modality> sweep's trials.csv (written by the sweep's own writer) from
    ``psnr[(lambda, apply_to)] = [seed 0, seed 1]``; lambda 0 repeats for every apply_to."""
    rows = []
    for (lam, apply_to), values in psnr.items():
        for seed, value in enumerate(values):
            params = {"fim.fim_lambda": lam, "fim.apply_to": apply_to, "run.seed": seed}
            trial = f"t{len(rows):03d}"
            rows.append(TrialRow(trial, params, value, value - 8.0, rounds=40, budget=40))
    write_csv(rows, KEYS, path)
    return path


def grid(mse, fim):
    """Every (lambda, apply_to) cell: MSE for lambda 0, ``fim`` overrides, else 1 dB below MSE."""
    psnr = {}
    for lam in (0.0, 0.25, 0.5, 1.0):
        for apply_to in ("inner", "outer", "both"):
            low = [v - 1.0 for v in mse]
            psnr[(lam, apply_to)] = mse if lam == 0 else fim.get((lam, apply_to), low)
    return psnr


def test_a_fim_config_wins_only_by_more_than_the_seed_spread(tmp_path):
    mse = [30.0, 30.4]  # spread 0.4
    clear = grid(mse, {(0.5, "outer"): [31.0, 31.2], (0.25, "both"): [30.6, 30.9]})
    path = write_sweep(tmp_path / "image.csv", clear)
    baseline, configs = read_scores(path)
    assert baseline.values == tuple(mse * 3)  # lambda 0 pooled over its three apply_to copies
    assert len(configs) == 9
    best = winner(baseline, configs)
    assert (best.fim_lambda, best.apply_to) == (0.5, "outer")
    lines = fim_study_markdown({"image": path})
    assert lines[0] == "## image"
    assert "winner: fim_lambda=0.5, apply_to=outer (31.10 dB vs MSE 30.20 dB)" in lines
    table = [line for line in lines if line.startswith("| 0.5 ")]
    assert table and "31.10 (31.00..31.20)" in table[0]


def test_mse_wins_when_no_fim_config_clears_the_spread(tmp_path):
    mse = [30.0, 30.6]  # spread 0.6; mean 30.3
    # mean 30.75 beats MSE by 0.45 < spread 0.6; mean 31.1 has its own spread 2.0 > 0.8
    close = grid(mse, {(1.0, "inner"): [30.7, 30.8], (0.25, "outer"): [30.1, 32.1]})
    audio = write_sweep(tmp_path / "audio.csv", close)
    image = write_sweep(tmp_path / "image.csv", grid([30.0, 30.0], {(1.0, "both"): [30.5, 30.6]}))
    lines = fim_study_markdown({"audio": audio, "image": image})
    verdicts = [line for line in lines if line.startswith("winner")]
    assert verdicts[0].startswith("winner: MSE (no fim_lambda > 0 beats MSE's 30.30 dB")
    assert verdicts[1] == (
        "winner: fim_lambda=1, apply_to=both (30.55 dB vs MSE 30.00 dB); at the edge of the grid "
        "(the largest fim_lambda, 1): widen it"
    )
    assert lines.index("## image") > lines.index("## audio")


def test_failed_trials_are_left_out_and_a_missing_baseline_is_one_line(tmp_path):
    path = write_sweep(tmp_path / "video.csv", grid([25.0, 25.2], {}))
    text = path.read_text().splitlines()
    text.append("t999,0.5,outer,0,,,3,40,error")
    path.write_text("\n".join(text) + "\n")
    _, configs = read_scores(path)
    assert [len(s.values) for s in configs] == [2] * 9
    only_fim = write_sweep(tmp_path / "nomse.csv", {(0.5, "inner"): [20.0, 21.0]})
    with pytest.raises(MclnfError, match="no completed fim_lambda=0 trial"):
        fim_study_markdown({"video": only_fim})
    with pytest.raises(MclnfError, match="no such sweep results file"):
        fim_study_markdown({"video": tmp_path / "absent.csv"})
