"""Cross-field rules: fields that contradict each other stop the job with one line naming them,
from the command line, YAML and configs built in code alike, before any work."""

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mclnf_dist.config import check_config, load_yaml_config, parse_config
from mclnf_dist.config_rules import box_problem, name_problem
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.city_config import CityExperimentConfig
from mclnf_dist.experiments.signals_config import SignalsConfig
from mclnf_dist.raystore.store import IngestOptions
from mclnf_dist.scenes.demo_city import CityConfig
from mclnf_dist.sweeps.driver import SweepConfig

ROOT = Path(__file__).resolve().parents[1]

CITY_CASES = [
    (["--fim.w-min", "5", "--fim.w-max", "1"], r"^fim\.w_min=5 is not below fim\.w_max=1"),
    (["--fim.w-min", "2", "--fim.w-max", "2"], r"^fim\.w_min=2 is not below fim\.w_max=2"),
    (
        ["--meta.head-layers", "9", "--methods", "oml", "mod"],
        r"^meta\.head_layers=9 is not below the field's depth 4",
    ),
    (
        ["--meta.head-layers", "4", "--methods", "oml"],
        r"^meta\.head_layers=4 is not below the field's depth 4",
    ),
    (
        ["--field.scene-box", "1", "0", "0", "0", "1", "1"],
        r"^field\.scene_box is empty or inverted on x: low 1 >= high 0",
    ),
    (
        ["--field.scene-box", "0", "0", "2", "1", "1", "2"],
        r"^field\.scene_box is empty or inverted on z: low 2 >= high 2",
    ),
    (
        ["--data.block-order", "0", "0", "5"],
        r"^data\.block_order=\[0, 0, 5\] lists block\(s\) \[0\] more than once",
    ),
    (["--data.block-order", "0", "-1"], r"^data\.block_order must be >= 0, got -1"),
    (
        ["--data.block-order", "0", "1", "6"],
        r"^data\.block_order=\[0, 1, 6\]: block\(s\) \[6\] do not exist \(expected ids 0\.\.5",
    ),
    (
        ["--data.meta-blocks", "1", "1"],
        r"^data\.meta_blocks=\[1, 1\] lists block\(s\) \[1\] more than once",
    ),
    (
        ["--data.blocks-x", "2", "--data.blocks-y", "1", "--data.meta-blocks", "2"],
        r"^data\.meta_blocks=\[2\]: block\(s\) \[2\] do not exist \(expected ids 0\.\.1",
    ),
    (
        ["--adapt.sgd-steps", "100", "--adapt.max-steps", "2"],
        r"^adapt\.sgd_steps=100 is more than adapt\.max_steps=2",
    ),
    (["--run-name", "../../escape"], r"^run_name='\.\./\.\./escape' is not a safe name"),
    (["--run-name", ".hidden"], r"^run_name='\.hidden' is not a safe name"),
    (["--run-name", "a/b"], r"^run_name='a/b' is not a safe name"),
    (
        ["--train.num-workers", "3", "--data.meta-blocks", "0", "1"],
        r"^train\.num_workers=3 is more than the 2 data\.meta_blocks \[0, 1\]",
    ),
    (
        ["--meta.algorithm", "reptile", "--fim.fim-lambda", "1", "--fim.apply-to", "both"],
        r"^fim\.apply_to='both' needs an outer loss, which meta\.algorithm='reptile'",
    ),
]


@pytest.mark.parametrize(("flags", "message"), CITY_CASES)
def test_city_rule_is_one_line_from_flags(flags, message):
    with pytest.raises(MclnfError, match=message) as caught:
        parse_config(CityExperimentConfig, flags)
    assert "\n" not in str(caught.value)


def test_rules_hold_for_configs_built_in_code_and_in_yaml(tmp_path):
    cfg = CityExperimentConfig()
    check_config(cfg)  # the defaults agree
    bad = dataclasses.replace(cfg, fim=dataclasses.replace(cfg.fim, w_min=5.0, w_max=1.0))
    with pytest.raises(MclnfError, match=r"^fim\.w_min=5 is not below fim\.w_max=1"):
        check_config(bad)
    path = tmp_path / "bad.yaml"
    path.write_text("adapt: {sgd_steps: 9, max_steps: 3}\n")
    with pytest.raises(MclnfError, match=r"bad\.yaml: adapt\.sgd_steps=9 is more than"):
        load_yaml_config(CityExperimentConfig, str(path))


def test_extend_may_name_blocks_beyond_the_grid():
    """An extension's new blocks follow the model's: their ids are not bounded by the grid."""
    cfg = parse_config(
        CityExperimentConfig, ["--extend", "m/blocks-meta", "--data.block-order", "7"]
    )
    assert cfg.data.block_order == (7,)


def test_head_layers_only_matter_to_oml():
    cfg = parse_config(CityExperimentConfig, ["--meta.head-layers", "9"])  # no oml: unused
    assert cfg.meta.head_layers == 9


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--field.depth", "3", "--meta.head-layers", "3"],
            r"^meta\.head_layers=3 is not below the field's depth 3",
        ),
        (["--data.size", "0", "32"], r"^data\.size=\(0, 32\): expected both"),
    ],
)
def test_signals_rules(flags, message):
    with pytest.raises(MclnfError, match=message):
        parse_config(SignalsConfig, flags)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CityConfig(min_height=50.0, max_height=40.0), r"min_height=50 is above"),
        (lambda: CityConfig(street_width=55.0), r"street_width=55 leaves no lot"),
        (
            lambda: CityConfig(aerial_views_per_block=0, street_views_per_block=0),
            r"aerial_views_per_block and CityConfig\.street_views_per_block are both 0",
        ),
        (
            lambda: IngestOptions(scene_box=((0.0, 0.0, 0.0), (1.0, -1.0, 1.0))),
            r"^scene_box is empty or inverted on y",
        ),
        (lambda: SweepConfig(name="../x"), r"^name='\.\./x' is not a safe name"),
    ],
)
def test_rules_of_configs_built_in_code(build, message):
    with pytest.raises(MclnfError, match=message):
        check_config(build())


def test_rule_helpers():
    assert name_problem("n", "city-demo_2.v1") is None
    for bad in ("", ".", "..", "a/b", "a b", "../x", ".x"):
        assert name_problem("n", bad)
    assert box_problem("b", ((0, 0, 0), (1, 1, 1))) is None
    assert box_problem("b", None) is None


def test_pipeline_exits_2_with_one_line_before_ray(tmp_path):
    """``python pipelines/city_nerf.py <bad flags>``: exit 2, ``error: ...``, seconds, no work."""
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "pipelines/city_nerf.py", "--fim.w-min", "5", "--fim.w-max", "1"]
        + ["--data.work-dir", str(work), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: fim.w_min=5 is not below fim.w_max=1 (every weight would be clipped to one "
        "value, i.e. plain MSE; expected w_min < w_max)"
    ]
    assert "Ray" not in done.stdout + done.stderr  # no local Ray started
    assert not work.exists() and not (tmp_path / "m.db").exists()  # nothing written
    assert seconds < 60
