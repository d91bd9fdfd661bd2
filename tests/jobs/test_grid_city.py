"""Every method of the city job on the grid block field, end to end (the smoke test of the
field kind): meta-training on Ray Train, the continual phase with parameter matching and the FIM
loss, block training with appearance codes, a proposal network and blended seams, the saved city
model and ``mclnf render``."""

from pathlib import Path

import pytest
import torch

from mclnf_dist.city.model import load_city_model
from mclnf_dist.cli import main as mclnf
from mclnf_dist.config import parse_config
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.jobs.city import CityExperimentConfig, run_city
from mclnf_dist.meta.methods import METHODS


@pytest.mark.timeout(900)
def test_every_method_runs_on_the_grid_field(ray_local, tmp_path, mlflow_uri):
    argv = [
        "--recipe", "city-demo-tiny", "--field.kind", "hash_grid",
        "--field.grid.grid.log2-table-size", "10", "--field.grid.grid.levels", "4",
        "--field.grid.appearance-features", "4", "--field.seam-margin", "0.2",
        "--field.grid.proposal.samples", "8", "--fim.fim-lambda", "1.0",
        "--methods", *METHODS, "--param-match", "--run-name", "grid",
        "--data.work-dir", str(tmp_path), "--tracking-uri", mlflow_uri,
    ]  # fmt: skip
    report = run_city(
        parse_config(CityExperimentConfig, argv, recipes=recipes_for(CityExperimentConfig))
    )
    assert {r["method"] for r in report["results"]} == set(METHODS)
    run = Path(report["run_folder"])
    model = load_city_model(str(run / "city_model"), "blocks-meta")
    assert model.field.kind == "hash_grid" and model.field.seam_margin == 0.2
    assert model.params["appearance_codes"].shape[1] > 1  # one code per training image
    assert model.field.grid.proposal.samples == 8 and "proposal_tables" in model.params
    matched = load_city_model(str(run / "city_model"), "maml")  # one network, larger tables
    modules = load_city_model(str(run / "city_model"), "mod")
    assert matched.params["hash_tables"].shape[2] > modules.params["hash_tables"].shape[2]
    assert torch.isfinite(model.params["hash_tables"]).all()
    out = tmp_path / "render"
    mclnf(["render", "--model", str(tmp_path), "--cameras", "orbit", "--frames", "1",
           "--scale", "0.5", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert len(list(out.glob("*.png"))) == 1
