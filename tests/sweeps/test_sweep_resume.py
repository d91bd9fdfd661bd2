"""A killed sweep resumes: run ``pipelines/sweep.py`` in a subprocess (joined to the test's real
local Ray), SIGKILL it once some trials have finished, run the same command again; the finished
trials are not rerun (no new iterations, no new MLflow points, no duplicate runs) and the sweep
completes."""

import csv
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
SPACE = """
pipeline: city
base:
  data: {{work_dir: {work}, blocks_x: 2, blocks_y: 2, image_size: 24, views_per_block: 4,
          fit_rays_per_block: 256, score_rays_per_block: 256}}
  meta: {{outer_steps: 40}}
  train: {{rays_per_task: 256}}
  field: {{num_samples: 16}}
metric: {{name: val_psnr, adapt_step: 4, every: 4}}
space:
  fim.fim_lambda: {{dist: loguniform, low: 0.01, high: 2.0}}
  meta.inner_lr: {{dist: loguniform, low: 0.1, high: 3.0}}
  field.mlp.width: {{dist: choice, values: [16, 32]}}
"""
SAMPLES = 6


def trial_states(folder: Path) -> dict[str, tuple[str, bool]]:
    """Trial id -> (status, has a checkpoint) in the saved experiment state ({} while none).

    The checkpoint, not the last result, says whether a trial resumes: Tune records a result
    before the save that registers its checkpoint, and a state saved in between has the one
    without the other."""
    from ray.tune import ExperimentAnalysis

    # a trial with no result yet has no metrics file: a warning on every poll otherwise
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if not list(folder.glob("experiment_state-*.json")):
        return {}
    try:
        trials = ExperimentAnalysis(str(folder)).trials
    except Exception:  # caught mid-write: try again
        return {}
    return {t.trial_id: (t.status, t.checkpoint is not None) for t in trials}


def iterations(folder: Path, trial_id: str) -> int:
    """Results Tune recorded for a trial (lines of its result.json)."""
    [trial_dir] = [p for p in folder.iterdir() if p.is_dir() and f"_{trial_id}_" in p.name]
    return len((trial_dir / "result.json").read_text().splitlines())


def split(states: dict[str, tuple[str, bool]]) -> tuple[list[str], list[str]]:
    """(finished trials, trials mid-way with a checkpoint) of a saved experiment state."""
    finished = [t for t, (status, _) in states.items() if status == "TERMINATED"]
    # a trial that was running loads as PENDING, and resumes from its checkpoint if it has one
    midway = [t for t, (status, saved) in states.items() if status != "TERMINATED" and saved]
    return finished, midway


def sweep_is_midway(folder: Path) -> bool:
    """The saved experiment state has a finished trial and a checkpointed unfinished one."""
    finished, midway = split(trial_states(folder))
    return bool(finished) and bool(midway)


def mlflow_runs(uri: str) -> dict[str, list]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mclnf-sweep-resume-it")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    out: dict[str, list] = {}
    for run in runs:
        if "trial_id" in run.data.tags:
            points = client.get_metric_history(run.info.run_id, "val_psnr")
            out.setdefault(run.data.tags["trial_id"], []).append((run.info.run_id, len(points)))
    return out


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(
    ray_local, tmp_path, mlflow_uri, kill_when
):
    import ray

    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(work=tmp_path / "city"))
    folder = tmp_path / "sweeps" / "resume-it"
    cmd = [
        sys.executable, "pipelines/sweep.py", "--space", str(space), "--num-samples", str(SAMPLES),
        "--work-dir", str(tmp_path), "--tracking-uri", mlflow_uri, "--name", "resume-it",
        "--grace-period", "3",  # every trial runs >= 12 rounds: time to kill the sweep mid-way
    ]  # fmt: skip
    env = os.environ | {
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "TUNE_GLOBAL_CHECKPOINT_S": "0.5",  # save the experiment state often: a finer kill test
        "RAY_DEDUP_LOGS": "0",  # every trial's own log lines
    }
    # Kill once the experiment state (saved every 0.5 s here) has a finished trial and a
    # checkpointed unfinished one. The state read after the kill is the one a resume loads.
    running = kill_when(cmd, env, tmp_path / "first.log", lambda: sweep_is_midway(folder), 240)
    assert running, (tmp_path / "first.log").read_text()[-3000:]
    before = trial_states(folder)
    finished, midway = split(before)
    assert 1 <= len(finished) < SAMPLES and midway, before
    print(f"killed with {len(finished)} finished and {len(midway)} mid-way trials")
    counted = {t: iterations(folder, t) for t in finished}
    tracked = mlflow_runs(mlflow_uri)
    assert all(len(tracked[t]) == 1 for t in finished)

    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert "resuming sweep resume-it" in out, out[-3000:]
    after = trial_states(folder)
    assert len(after) == SAMPLES and {s for s, _ in after.values()} == {"TERMINATED"}, after
    for trial in midway:  # continued from its checkpoint, in its own MLflow run
        assert re.search(rf"\[trial {trial} +[\d.]+s\] resuming at round \d+", out), out[-3000:]
        assert len(mlflow_runs(mlflow_uri)[trial]) == 1
    for trial in finished:  # not rerun: no new results, no new MLflow points or runs
        assert iterations(folder, trial) == counted[trial], trial
        assert mlflow_runs(mlflow_uri)[trial] == tracked[trial], trial
    assert all(len(runs) == 1 for runs in mlflow_runs(mlflow_uri).values())
    client = MlflowClient(mlflow_uri)
    for [(run_id, _)] in mlflow_runs(mlflow_uri).values():  # no round logged twice
        steps = [p.step for p in client.get_metric_history(run_id, "val_psnr")]
        assert len(steps) == len(set(steps)), (run_id, steps)
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    assert len(rows) == SAMPLES and all(r["status"] != "error" for r in rows), rows
    assert (folder / "best_config.yaml").exists()
