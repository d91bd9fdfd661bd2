"""theta_0 as an asset: saved, found (file, folder, MLflow run), checked against the job's field."""

import pytest
import torch

from mclnf_dist.city.init_asset import load_init, save_init
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params
from mclnf_dist.tracking import Tracker


def field(width: int) -> RadianceFieldConfig:
    return RadianceFieldConfig(mlp=FieldConfig(kind="relu_pe", depth=3, width=width))


def test_saved_init_loads_from_file_folder_and_mlflow_run(tmp_path, mlflow_uri):
    theta0 = init_radiance_params(field(16), 1, torch.Generator().manual_seed(3))
    path = save_init(tmp_path / "run", "mse", theta0, field(16))
    like = init_radiance_params(field(16), 1, torch.Generator().manual_seed(4))
    for source in (path, str(tmp_path / "run")):
        loaded = load_init(source, "mse", like)
        assert all(torch.equal(loaded[k], theta0[k]) for k in theta0)
    with Tracker("assets", "writer", mlflow_uri) as tracker:
        tracker.log_artifact(path, "city_model")
    loaded = load_init(f"mlflow:{tracker.run_id}", "mse", like, mlflow_uri)
    assert all(torch.equal(loaded[k], theta0[k]) for k in theta0)


def test_init_of_another_field_or_missing_is_one_clear_error(tmp_path):
    theta0 = init_radiance_params(field(16), 1, torch.Generator().manual_seed(3))
    save_init(tmp_path, "mse", theta0, field(16))
    wider = init_radiance_params(field(32), 1, torch.Generator().manual_seed(3))
    with pytest.raises(MclnfError, match="different field"):
        load_init(str(tmp_path), "mse", wider)
    with pytest.raises(MclnfError, match="file not found"):
        load_init(str(tmp_path / "nothing"), "mse", wider)
