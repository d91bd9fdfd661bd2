"""Search-space files: the shipped ones are valid; a mistake is one line naming the file and key."""

import subprocess
import sys
from pathlib import Path

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from mclnf_dist.errors import MclnfError
from mclnf_dist.jobs.city import CityExperimentConfig
from mclnf_dist.jobs.signals import SignalsConfig
from mclnf_dist.sweeps.space import load_space

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "tune_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_shipped_space_is_valid(path):
    space = load_space(path)
    assert space.params and set(space.tune_space()) == set(space.params)
    assert space.reports(space.base_config()) >= 2  # room for the scheduler to stop trials


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


VALID = """
pipeline: city
base: {meta: {outer_steps: 30}, data: {blocks_x: 2}}
metric: {name: val_psnr, adapt_step: 8, every: 10}
space:
  fim.fim_lambda: {dist: loguniform, low: 1e-2, high: 2.0}
  fim.beta: {dist: uniform, low: 0.0, high: 1.0}
  meta.inner_steps: {dist: randint, low: 1, high: 4}
  meta.algorithm: {dist: choice, values: [maml, fomaml]}
  field.mlp.width: {dist: grid, values: [32, 64]}
"""


def test_a_valid_file_becomes_a_tune_space_and_trial_configs(tmp_path):
    space = load_space(write(tmp_path, VALID))
    tune_space = space.tune_space()
    assert isinstance(tune_space["fim.fim_lambda"], Float)
    assert tune_space["fim.fim_lambda"].lower == 0.01  # YAML's text "1e-2" read as a number
    assert isinstance(tune_space["meta.inner_steps"], Integer)
    assert (tune_space["meta.inner_steps"].lower, tune_space["meta.inner_steps"].upper) == (1, 5)
    assert isinstance(tune_space["meta.algorithm"], Categorical)
    assert tune_space["field.mlp.width"] == {"grid_search": [32, 64]}
    assert space.has_grid and space.reports(space.base_config()) == 3
    import numpy as np

    cfg = space.trial_config({"fim.fim_lambda": 0.3, "meta.inner_steps": np.int64(3)})
    assert isinstance(cfg, CityExperimentConfig)
    assert cfg.fim.fim_lambda == 0.3 and cfg.meta.inner_steps == 3
    assert type(cfg.meta.inner_steps) is int  # not numpy's
    assert cfg.meta.outer_steps == 30 and cfg.data.blocks_x == 2  # the base
    assert cfg.meta.inner_lr == CityExperimentConfig().meta.inner_lr  # the defaults


def test_signals_trial_configs_start_from_the_recipe_base_names(tmp_path):
    path = write(
        tmp_path,
        "pipeline: signals\nbase: {recipe: audio, meta: {outer_steps: 7}}\n"
        "space: {fim.beta: {dist: uniform, low: 0, high: 1}}\n",
    )
    cfg = load_space(path).trial_config({"fim.beta": 0.5})
    assert isinstance(cfg, SignalsConfig) and cfg.meta.meta_batch_size == 3  # audio's recipe
    assert cfg.data.modality == "audio" and cfg.meta.outer_steps == 7 and cfg.fim.beta == 0.5


@pytest.mark.parametrize(
    "entry,expected",
    [
        (
            "fim.fim_lamda: {dist: uniform, low: 0, high: 1}",
            "space.fim.fim_lamda is not a field of the city config "
            "(nearest valid keys: fim.fim_lambda",
        ),
        ("fim: {dist: uniform, low: 0, high: 1}", "space.fim is a section, not a value"),
        ("fim.beta: {dist: normal, low: 0, high: 1}", "space.fim.beta: unknown dist 'normal'"),
        (
            "fim.beta: {dist: uniform, low: 1, high: 0}",
            "space.fim.beta: low must be less than high",
        ),
        ("fim.beta: {dist: uniform, low: 0.5, high: 0.5}", "low must be less than high"),
        (
            "fim.beta: {dist: loguniform, low: 0, high: 1}",
            "space.fim.beta: loguniform needs low > 0",
        ),
        ("fim.beta: {dist: uniform, low: zero, high: 1}", "space.fim.beta: low must be a number"),
        ("fim.beta: {dist: uniform, low: .nan, high: 1}", "low must be a finite number"),
        ("fim.beta: {dist: uniform, low: 0}", "space.fim.beta: high must be a number"),
        (
            "fim.beta: {dist: uniform, low: 0, high: 1, step: 2}",
            "unknown key 'step' for dist uniform",
        ),
        ("fim.beta: 0.3", "space.fim.beta must be a mapping with a 'dist' key"),
        (
            "meta.inner_steps: {dist: uniform, low: 1, high: 4}",
            "uniform needs a float field, meta.inner_steps is int (use randint or choice)",
        ),
        ("fim.beta: {dist: randint, low: 0, high: 4}", "randint needs an int field"),
        (
            "meta.inner_steps: {dist: choice, values: [1, two]}",
            "meta.inner_steps must be int, got 'two'",
        ),
        (
            "meta.algorithm: {dist: choice, values: [maml, magic]}",
            "space.meta.algorithm: unknown value 'magic' (expected one of: maml, fomaml, reptile)",
        ),
        ("meta.algorithm: {dist: grid, values: []}", "grid needs a non-empty list of values"),
        ("data.blocks_x: {dist: choice, values: [2, 3]}", "data.* cannot be swept"),
        (
            "meta.inner_steps: {dist: randint, low: 0, high: 4}",
            "space: meta.inner_steps must be >= 1, got 0",
        ),
        ("fim.beta: {dist: uniform, low: 0.5, high: 2}", "fim.beta must be >= 0 and <= 1, got 2.0"),
        ("meta.outer_lr: {dist: choice, values: [0.1, -1]}", "meta.outer_lr must be > 0, got -1.0"),
        ("meta.outer_steps: {dist: choice, values: [10, 20]}", "is the trials' budget"),
    ],
)
def test_a_bad_space_entry_is_one_line_naming_the_file_and_key(tmp_path, entry, expected):
    path = write(tmp_path, f"pipeline: city\nspace:\n  {entry}\n")
    with pytest.raises(MclnfError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message and expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text,expected",
    [
        ("pipeline: nerf\nspace: {}", "pipeline must be one of: city, signals"),
        ("pipeline: city\nspaces: {}", "unknown key 'spaces'"),
        ("pipeline: city\nspace: {}", "space must be a non-empty mapping"),
        (
            "pipeline: city\nbase: {fimm: {}}\nspace: {run.seed: {dist: grid, values: [0]}}",
            "unknown key 'base.fimm'",
        ),
        (
            "pipeline: city\nbase: {meta: {inner_lr: fast}}\n"
            "space: {run.seed: {dist: grid, values: [0]}}",
            "base.meta.inner_lr must be float",
        ),
        (
            "pipeline: city\nmetric: {adapt_step: 0}\nspace: {run.seed: {dist: grid, values: [0]}}",
            "metric.adapt_step must be >= 1, got 0",
        ),
        (
            "pipeline: city\nmetric: {name: loss}\nspace: {run.seed: {dist: grid, values: [0]}}",
            "metric.name must be one of: val_psnr, got 'loss'",
        ),
        (
            "pipeline: city\nmetric: {steps: 3}\nspace: {run.seed: {dist: grid, values: [0]}}",
            "unknown key 'metric.steps'",
        ),
        ("pipeline: [city", "is not valid YAML"),
        (
            "pipeline: city\nbase: {recipe: image}\nspace: {run.seed: {dist: grid, values: [0]}}",
            "base.recipe: unknown recipe 'image' (expected one of: city-demo",
        ),
        (
            "pipeline: city\nbase: {meta: {outer_steps: -5}}\n"
            "space: {run.seed: {dist: grid, values: [0]}}",
            "base.meta.outer_steps must be >= 1, got -5",
        ),
    ],
)
def test_a_bad_space_file_is_one_clear_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(MclnfError) as err:
        load_space(path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_the_command_line_reports_a_bad_space_in_one_line(tmp_path):
    path = write(tmp_path, "pipeline: city\nspace:\n  fim.bta: {dist: uniform, low: 0, high: 1}\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "sweep.py"), "--space", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "space.fim.bta" in lines[0] and "fim.beta" in lines[0], lines[0]


def test_mclnf_sweep_is_a_subcommand(tmp_path, capsys):
    from mclnf_dist.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--space", str(tmp_path / "missing.yaml")])
    assert exit_.value.code == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    main(["--help"])
    assert "sweep" in capsys.readouterr().out
