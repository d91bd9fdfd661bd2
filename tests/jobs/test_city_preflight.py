"""What the city job and the other commands refuse before any work: an unwritable work or output
folder, a ``--meta.init-from`` of another field (one line each, no Ray start, no MLflow run)."""

import os
from pathlib import Path

import pytest
import torch

from mclnf_dist.city.init_asset import save_init
from mclnf_dist.cli import main as mclnf
from mclnf_dist.config import parse_config
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.jobs.city import CityExperimentConfig, run_city
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params
from mclnf_dist.preflight import check_writable

RECIPES = recipes_for(CityExperimentConfig)


def blocked(tmp_path: Path) -> Path:
    """A folder no one can create, root included: its parent is a regular file."""
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path / "afile" / "sub"


def ray_running() -> bool:
    import ray

    return ray.is_initialized()


def mlflow_runs(uri: str) -> list:
    """Every run of every experiment in the tracking store (none if it was never created)."""
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def test_check_writable_creates_the_folder_and_refuses_what_cannot_be_written(tmp_path):
    check_writable(str(tmp_path / "new" / "deep"), "--x")
    assert (tmp_path / "new" / "deep").is_dir() and not any((tmp_path / "new" / "deep").iterdir())
    with pytest.raises(MclnfError, match=r"^--x .*/afile/sub is not writable \(a file"):
        check_writable(str(blocked(tmp_path)), "--x")
    with pytest.raises(MclnfError, match=r"is not writable \(a file, not a folder, is in the way"):
        check_writable(str(tmp_path / "afile"), "--x")
    check_writable("s3://bucket/prefix", "--x")  # remote stores: the storage module's probe


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(MclnfError, match=r"is not writable \(Permission denied"):
            check_writable(str(folder / "out"), "--x")
    finally:
        folder.chmod(0o700)


def test_unwritable_work_dir_is_refused_before_ray_and_ingest(tmp_path, mlflow_uri):
    was_running = ray_running()
    argv = [
        "--recipe", "city-demo-tiny", "--data.work-dir", str(blocked(tmp_path)),
        "--data.data-uri", str(tmp_path / "rays"), "--storage-uri", str(tmp_path / "runs"),
        "--tracking-uri", mlflow_uri,
    ]  # fmt: skip
    cfg = parse_config(CityExperimentConfig, argv, recipes=RECIPES)
    with pytest.raises(MclnfError) as caught:
        run_city(cfg)
    assert str(caught.value).startswith(f"--data.work-dir {blocked(tmp_path)} is not writable")
    assert "\n" not in str(caught.value)
    assert ray_running() == was_running and not (tmp_path / "rays").exists()
    assert mlflow_runs(mlflow_uri) == []


def test_init_from_of_another_width_is_refused_before_ray_and_mlflow(tmp_path, mlflow_uri):
    wrong = RadianceFieldConfig(mlp=FieldConfig(kind="relu_pe", depth=4, width=16))
    asset = save_init(tmp_path / "other", "mse", init_radiance_params(wrong, 1), wrong)
    was_running = ray_running()
    argv = [
        "--recipe", "city-demo-tiny", "--data.work-dir", str(tmp_path / "work"),
        "--meta.init-from", asset, "--tracking-uri", mlflow_uri,
    ]  # fmt: skip
    with pytest.raises(MclnfError) as caught:
        run_city(parse_config(CityExperimentConfig, argv, recipes=RECIPES))
    message = str(caught.value)
    assert message.startswith(f"{asset}: theta_0 of a different field") and "\n" not in message
    assert ray_running() == was_running
    assert not any((tmp_path / "work" / name).exists() for name in ("rays", "demo_city"))
    assert mlflow_runs(mlflow_uri) == []


def test_init_from_of_the_right_width_passes_the_preflight(tmp_path):
    from mclnf_dist.jobs.city_preflight import check_init_from

    cfg = parse_config(CityExperimentConfig, ["--recipe", "city-demo-tiny"], recipes=RECIPES)
    theta0 = init_radiance_params(cfg.field, 1, torch.Generator().manual_seed(0))
    asset = save_init(tmp_path / "right", "mse", theta0, cfg.field)
    cfg.meta.init_from = asset
    check_init_from(cfg)


@pytest.mark.parametrize(
    "command",
    [
        lambda out: ["render", "--model", "nowhere", "--out", out],
        lambda out: ["dataset", "make-city", out],
    ],
    ids=["render --out", "dataset make-city"],
)
def test_commands_into_an_unwritable_folder_give_one_line(tmp_path, capsys, command):
    out = str(blocked(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        mclnf(command(out))
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is not writable" in lines[0]
