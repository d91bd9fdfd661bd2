"""Sweeps end to end on a real local Ray (2 CPUs) and a real MLflow sqlite store: an 8-trial ASHA
sweep of the city pipeline (tiny demo city) and an Optuna sweep of the image pipeline (real LFW
faces); every trial is an MLflow run with its params and curve, the best config loads in the
pipeline, and re-running it reproduces the trial."""

import csv
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mclnf_dist.config import parse_config
from mclnf_dist.jobs.city import CityExperimentConfig
from mclnf_dist.jobs.signals import SignalsConfig
from mclnf_dist.sweeps.driver import SweepConfig, run_sweep
from mclnf_dist.sweeps.space import get_path, load_space
from mclnf_dist.sweeps.trial import evaluate_config

TINY_CITY = """
pipeline: city
base:
  data: {{work_dir: {work}, blocks_x: 2, blocks_y: 2, image_size: 24, views_per_block: 4,
          fit_rays_per_block: 256, score_rays_per_block: 256}}
  meta: {{outer_steps: 8}}
  train: {{rays_per_task: 64}}
  field: {{num_samples: 16}}
metric: {{name: val_psnr, adapt_step: 4, every: 2}}
space:
  fim.fim_lambda: {{dist: loguniform, low: 0.01, high: 2.0}}
  meta.inner_lr: {{dist: loguniform, low: 0.1, high: 3.0}}
  meta.algorithm: {{dist: choice, values: [maml, fomaml]}}
  field.mlp.width: {{dist: choice, values: [16, 32]}}
"""

TINY_IMAGES = """
pipeline: signals
base:
  data: {modality: image, num_train: 10, num_test: 4}
  meta: {outer_steps: 6, meta_batch_size: 4}
  field: {width: 16}
metric: {name: val_psnr, adapt_step: 4, every: 2}
space:
  fim.fim_lambda: {dist: choice, values: [0.0, 0.5]}
  meta.inner_lr: {dist: loguniform, low: 1.0e-3, high: 1.0e-1}
  meta.inner_steps: {dist: randint, low: 1, high: 2}
"""


def sweep(tmp_path: Path, mlflow_uri: str, space_text: str, name: str, *extra: str) -> dict:
    space = tmp_path / f"{name}.yaml"
    space.write_text(space_text)
    argv = [
        "--space", str(space), "--work-dir", str(tmp_path), "--tracking-uri", mlflow_uri,
        "--name", name, *extra,
    ]  # fmt: skip
    return run_sweep(parse_config(SweepConfig, argv))


def check_tracking(mlflow_uri: str, name: str, keys: list[str], rows: list[dict]) -> None:
    """One parent run with the sweep's artifacts; every trial a FINISHED child run with its
    params and its val_psnr curve (one point per report Tune saw)."""
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(f"mclnf-sweep-{name}")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["pipeline"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    expected = {"best_config.yaml", "results.md", "trials.csv", "val_psnr.png"}
    assert {f"sweep/{f}" for f in expected} <= artifacts, artifacts
    trials = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
    finals: dict[str, float] = {}  # trial -> its last tracked val_psnr
    assert len(trials) == len(rows) == len(runs) - 1  # no duplicates
    for row in rows:
        run = trials[row["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert set(keys) <= set(run.data.params) and run.data.params["method"] in ("mod", "mim")
        history = client.get_metric_history(run.info.run_id, "val_psnr")
        assert len(history) >= 1 and max(p.step for p in history) == int(row["rounds"])
        finals[row["trial_id"]] = max(history, key=lambda p: p.step).value
        assert run.data.tags["stopped_early"] == str(row["status"] == "stopped early").lower()
    # the parent's best is the best last val_psnr of the trials that ran their whole budget
    whole = [finals[r["trial_id"]] for r in rows if r["status"] != "stopped early"]
    best = max(whole or finals.values())
    assert parent.data.metrics["best_val_psnr"] == pytest.approx(best, abs=1e-9)


def test_city_sweep_asha_mlflow_best_config_and_rerun(ray_local, tmp_path, mlflow_uri):
    text = TINY_CITY.format(work=tmp_path / "city")
    summary = sweep(tmp_path, mlflow_uri, text, "city-it", "--num-samples", "8")
    folder = tmp_path / "sweeps" / "city-it"
    assert summary["trials"] == 8 and summary["errors"] == 0
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    assert len(rows) == 8
    stopped = [r for r in rows if r["status"] == "stopped early"]
    assert stopped and all(int(r["rounds"]) < 8 for r in stopped)  # ASHA stopped some early
    assert summary["stopped_early"] == len(stopped)
    assert (folder / "val_psnr.png").read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"^\| trial +\|", (folder / "results.md").read_text(), re.MULTILINE)
    space = load_space(tmp_path / "city-it.yaml")
    check_tracking(mlflow_uri, "city-it", list(space.params), rows)

    best = summary["best"]
    assert best["rounds"] == 8  # a trial that ran its whole budget
    cfg = parse_config(CityExperimentConfig, ["--config", str(folder / "best_config.yaml")])
    for key, value in best["params"].items():
        assert get_path(cfg, key) == pytest.approx(value), key
    assert cfg.meta.outer_steps == 8 and cfg.data.blocks_x == 2  # the base came along
    metrics = evaluate_config(str(folder / "best_config.yaml"), space)
    assert metrics["round"] == 8
    assert abs(metrics["val_psnr"] - best["val_psnr"]) < 0.5, (metrics, best)


def test_image_sweep_with_optuna(ray_local, tmp_path, mlflow_uri):
    summary = sweep(
        tmp_path, mlflow_uri, TINY_IMAGES, "image-it", "--num-samples", "4", "--search", "optuna"
    )
    folder = tmp_path / "sweeps" / "image-it"
    assert summary["trials"] == 4 and summary["errors"] == 0
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    space = load_space(tmp_path / "image-it.yaml")
    check_tracking(mlflow_uri, "image-it", list(space.params), rows)
    best = summary["best"]
    cfg = parse_config(SignalsConfig, ["--config", str(folder / "best_config.yaml")])
    assert cfg.data.modality == "image" and cfg.meta.outer_steps == 6
    assert cfg.meta.inner_steps == best["params"]["meta.inner_steps"] in (1, 2)
    assert cfg.fim.fim_lambda == best["params"]["fim.fim_lambda"]
    metrics = evaluate_config(str(folder / "best_config.yaml"), space)
    assert abs(metrics["val_psnr"] - best["val_psnr"]) < 0.5, (metrics, best)
