"""Ctrl-C on a real city job (its own embedded Ray, as a user runs it), in meta-training, the
continual phase and block training: each stops within seconds with exit 130 and one line saying
how to resume, the MLflow run is KILLED, and the re-run continues the same run to the end. A
second job with the same run name, started while the first runs, refuses with one line."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mclnf_dist.cli import run_with_clean_errors
from mclnf_dist.jobs.city import main
from mclnf_dist.runs import COMPLETE, LOCK

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--adapt.max-steps", "8", "--methods", "random", "mod",
    "--block.steps", "200", "--block.batch-rays", "64", "--block.probe-rays", "64",
    "--block.checkpoint-every", "10",
    "--data.fit-rays-per-block", "512", "--data.score-rays-per-block", "256",
    "--render-views", "1", "--data.image-size", "24", "--data.views-per-block", "4",
    "--data.blocks-x", "2", "--data.blocks-y", "1", "--data.meta-blocks", "0",
    "--train.num-workers", "1", "--meta.outer-steps", "40", "--train.rays-per-task", "64",
    "--workers", "0", "--experiment", "interrupts", "--run-name", "ctrl-c",
]  # fmt: skip


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
    return env | {"PYTHONUNBUFFERED": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def command(work: Path, *extra: str) -> list[str]:
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    return [sys.executable, "pipelines/city_nerf.py", *TINY, "--data.work-dir", str(work),
            "--tracking-uri", tracking, *extra]  # fmt: skip


def interrupt_when(cmd: list[str], log: Path, ready: Callable[[str], bool]) -> tuple[int, float]:
    """Start ``cmd``; once ``ready(output so far)``, send SIGINT; (exit code, seconds to exit)."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=job_env(), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 300
            while process.poll() is None and not ready(log.read_text()):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            assert process.poll() is None, log.read_text()[-3000:]  # still running: interrupt it
            sent = time.monotonic()
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=60)
            return code, time.monotonic() - sent
        finally:
            process.kill()
            process.wait()


def meta_checkpoints(work: Path) -> list[Path]:
    return list((work / "runs" / "ctrl-c").glob("*/meta-mse/meta_init/meta-init-*.pt"))


@pytest.mark.timeout(900)
def test_ctrl_c_in_every_phase_stops_fast_and_the_rerun_resumes(tmp_path, capsys):
    work = tmp_path / "work"
    refusals = []

    def second_job_refuses() -> bool:
        """A second job with the same run name, while the first one holds the run, stops with
        one line before any work (run in this process: it never gets as far as Ray)."""
        with pytest.raises(SystemExit) as stop:
            run_with_clean_errors(main, command(work)[2:])
        said = capsys.readouterr().err
        assert stop.value.code == 2 and "is being written by another job" in said, said
        refusals.append(1)
        return True

    phases = {
        "meta-training": lambda out: len(meta_checkpoints(work)) >= 2 and second_job_refuses(),
        "continual phase": lambda out: "continual phase:" in out,
        "block training": lambda out: "block training:" in out,
    }
    for number, (phase, ready) in enumerate(phases.items()):
        log = tmp_path / f"{number}.log"
        code, seconds = interrupt_when(command(work), log, ready)
        out = log.read_text()
        assert code == 130 and seconds < 10, (phase, code, seconds, out[-3000:])
        stopped = [line for line in out.splitlines() if line.startswith("stopped:")]
        assert len(stopped) == 1 and "re-run the same command to resume" in stopped[0], out[-2000:]
        assert "Traceback" not in out, out[-3000:]
        if number > 0:
            assert "continuing the interrupted run ctrl-c/" in out, out[-3000:]
        if phase == "meta-training":
            assert refusals == [1], refusals
    (run,) = (work / "runs" / "ctrl-c").iterdir()
    assert not (run / COMPLETE).exists() and not (run / LOCK).exists()
    final = subprocess.run(command(work), cwd=ROOT, env=job_env(), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    out = final.stdout + final.stderr
    assert final.returncode == 0, out[-4000:]
    assert f"continuing the interrupted run ctrl-c/{run.name}" in out
    assert "meta-mse: resuming at round" in out
    assert json.loads((run / COMPLETE).read_text())["run"] == f"ctrl-c/{run.name}"
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("interrupts")
    statuses = sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))
    assert statuses == ["FINISHED", "KILLED", "KILLED", "KILLED"], statuses
