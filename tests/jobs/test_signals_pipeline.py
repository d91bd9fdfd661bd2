"""Every method of the signals pipeline, end to end for two steps, with a real MLflow store."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from mclnf_dist.jobs.signals import SignalsConfig, main, run_signals
from mclnf_dist.meta.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("modality,workers", [("image", 2), ("audio", 0), ("video", 0)])
def test_every_method_runs_two_steps_and_is_tracked(
    modality, workers, tmp_path, mlflow_uri, request
):
    if workers > 1:
        request.getfixturevalue("ray_local")  # methods fan out as tasks on a real local Ray
    argv = [
        "--workers", str(workers),
        "--modality", modality, "--data.num-train", "4", "--data.num-test", "2",
        "--meta.outer-steps", "2", "--meta.meta-batch-size", "2", "--adapt.max-steps", "2",
        "--adapt.sgd-steps", "1", "--fim.fim-lambda", "0.5",  # mim is not mod: every method runs
        "--field.width", "16", "--output-dir", str(tmp_path / "out"),
        "--tracking-uri", mlflow_uri, "--experiment", f"smoke-{modality}",
    ]  # fmt: skip
    main(argv)
    out = tmp_path / "out" / modality
    report = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in report["results"]] == list(METHODS)
    data = report["data"]  # held-out signals share no source with meta-training, measured
    assert report["overlap_fraction"] == 0.0 and data["test_sources"] and data["train_sources"]
    assert not set(data["train_sources"]) & set(data["test_sources"])
    assert (data["num_train"], data["num_held_out"], data["split_seed"]) == (4, 2, 0)
    for result in report["results"]:
        assert set(result["curve"]) == {"1", "2"}
    assert (out / "psnr_curves.png").stat().st_size > 1000
    assert (out / "reconstructions.png").stat().st_size > 1000
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[f"smoke-{modality}"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.data.modality"] == modality
    for result in report["results"]:  # MLflow holds the numbers of the results file
        name = result["method"]
        assert run[f"metrics.{name}_psnr_step1"] == pytest.approx(result["psnr_step1"])
        assert run[f"metrics.{name}_psnr_last"] == pytest.approx(result["psnr_last"])
        assert run[f"metrics.{name}_psnr"] == pytest.approx(result["curve"]["2"])  # last step
    client = mlflow.MlflowClient(mlflow_uri)
    artifacts = {a.path for a in client.list_artifacts(run["run_id"], "results")}
    assert {"results/psnr_curves.png", "results/results.json"} <= artifacts


def test_param_match_widens_one_network_methods(tmp_path, mlflow_uri):
    cfg = SignalsConfig(methods=("random", "mod"), param_match=True)
    cfg.data.num_train, cfg.data.num_test = 2, 2
    cfg.meta.outer_steps, cfg.adapt.max_steps, cfg.output_dir = 1, 1, str(tmp_path)
    cfg.run.seed, cfg.run.tracking_uri, cfg.workers = 1, mlflow_uri, 0
    results = {r["method"]: r for r in run_signals(cfg)["results"]}
    ratio = results["random"]["params_per_signal"] / results["mod"]["params_per_signal"]
    assert 0.9 < ratio <= 1.0


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--modality", "smell"], "unknown recipe 'smell' (expected one of: image, image-quick"),
        (["--methods", "random", "magic"], "invalid choice 'magic' for argument '--methods'"),
        (["--meta.inner-steps", "0"], "meta.inner_steps must be >= 1, got 0"),
        (["--data.modality", "smell"], "invalid choice 'smell' for argument '--data.modality'"),
        (["--data.source", "/nonexistent/folder"], "/nonexistent/folder does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(args, expected, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "signals.py"), *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
