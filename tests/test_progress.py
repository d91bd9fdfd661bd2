"""Progress lines off a terminal: rate and ETA, at most ~21 lines a bar however slow the machine."""

from mclnf_dist.progress import ProgressLog


def test_bar_lines_are_bounded_and_show_rays_per_second(capsys):
    bar = ProgressLog("test").bar("meta-train", 1000, "round", rays_per_unit=512)
    bar.interval_s = 0.0  # a slow machine: every update is past the interval
    for _ in range(1000):
        bar.update()
    lines = capsys.readouterr().out.strip().splitlines()
    assert 10 <= len(lines) <= 21
    assert "1000/1000 rounds" in lines[-1] and "rays/s" in lines[-1] and "ETA 0s" in lines[-1]


def test_resumed_bar_counts_rates_from_where_it_started(capsys):
    bar = ProgressLog("test").bar("meta-train", 100, "round")
    bar.start_at(90)
    bar.goto(100)
    assert "100/100 rounds" in capsys.readouterr().out
    assert bar.first == 90
