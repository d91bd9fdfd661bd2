"""The one config system: ``--config`` YAML validated field by field, choices (``Literal``) and
ranges declared once per field and checked on every path, run settings shared by every job."""

import dataclasses
import typing

import numpy
import pytest

from mclnf_dist.city.data import CityDataConfig
from mclnf_dist.config import (
    PositiveInt,
    check_config,
    load_yaml_config,
    numeric_fields_without_range,
    parse_config,
)
from mclnf_dist.distributed.train_config import TrainConfig
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.signals_config import DataConfig
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.jobs.city import CityExperimentConfig
from mclnf_dist.jobs.report import ReportConfig
from mclnf_dist.jobs.signals import SignalsConfig
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.raystore.store import IngestOptions
from mclnf_dist.run_settings import RunSettings
from mclnf_dist.scenes.demo_city import CityConfig
from mclnf_dist.sweeps.driver import SweepConfig
from mclnf_dist.sweeps.space import MetricSpec


def test_float_fields_take_numbers_and_yaml_exponent_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("meta: {outer_lr: 1e-3, inner_lr: 2}\n")  # YAML 1.1 reads 1e-3 as text
    cfg = load_yaml_config(SignalsConfig, str(path))
    assert cfg.meta.outer_lr == 1e-3 and cfg.meta.inner_lr == 2.0
    assert type(cfg.meta.inner_lr) is float


def test_a_float_field_rejects_other_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("meta: {outer_lr: fast}\n")
    with pytest.raises(MclnfError, match=r"c.yaml: meta.outer_lr must be float, got 'fast'"):
        load_yaml_config(SignalsConfig, str(path))


# ------------------------------------------------------------ choices and ranges, declared once


def yaml_file(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_a_choice_outside_its_literal_in_yaml_is_one_line_naming_file_key_and_choices(tmp_path):
    path = yaml_file(tmp_path, "meta: {algorithm: magic}\n")
    with pytest.raises(MclnfError) as err:
        load_yaml_config(SignalsConfig, path)
    assert str(err.value) == (
        f"{path}: meta.algorithm must be one of: maml, fomaml, reptile, got 'magic'"
    )
    path = yaml_file(tmp_path, "methods: [random, magic]\nrun: {device: tpu}\n")
    with pytest.raises(MclnfError, match=r"c.yaml: methods must be one of: random, .*'magic'"):
        load_yaml_config(SignalsConfig, path)


def test_a_number_outside_its_range_in_yaml_is_one_line(tmp_path):
    path = yaml_file(tmp_path, "meta: {inner_steps: 0}\n")
    with pytest.raises(MclnfError) as err:
        load_yaml_config(SignalsConfig, path)
    assert str(err.value) == f"{path}: meta.inner_steps must be >= 1, got 0"
    path = yaml_file(tmp_path, "adapt: {batch_size: -1}\n")  # 0 is the sentinel, -1 is not
    with pytest.raises(MclnfError, match=r"must be >= 1 \(or 0: all rows\), got -1"):
        load_yaml_config(SignalsConfig, path)
    assert load_yaml_config(SignalsConfig, yaml_file(tmp_path, "adapt: {batch_size: 0}\n"))


def cli_error(capsys, argv: list[str]) -> str:
    """Run the real ``mclnf`` entry point; it must exit 2 with one ``error:`` line on stderr."""
    from mclnf_dist.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["city", "--meta.outer-steps", "-5"], "error: meta.outer_steps must be >= 1, got -5"),
        (["signals", "--meta.inner-steps", "0"], "error: meta.inner_steps must be >= 1, got 0"),
        (["city", "--fim.beta", "1.5"], "error: fim.beta must be >= 0 and <= 1, got 1.5"),
        (["city", "--workers", "-3"], "error: workers must be >= 0 (or -1: auto), got -3"),
        (["sweep", "--reduction-factor", "1"], "error: reduction_factor must be > 1, got 1.0"),
        (["report", "--seed", "-1"], "error: run.seed must be >= 0, got -1"),
        (["city", "--meta.algorithm", "magic"], "invalid choice 'magic' for argument"),
        (["signals", "--device", "tpu"], "invalid choice 'tpu' for argument '--device'"),
        (["report", "--sections", "faces", "sky"], "invalid choice 'sky'"),
        (["city", "--bogus", "3"], "error: unrecognized arguments: --bogus 3 (see --help)"),
        (["city", "--meta.outer-steps", "x"], "argument '--meta.outer-steps': invalid literal for"),
        (["signals", "--device"], "error: argument '--device' needs a value (see --help)"),
        (["signals", "--recipe", "smell"], "unknown recipe 'smell' (expected one of: image,"),
    ],
)
def test_bad_values_stop_the_real_entry_points_before_any_work(capsys, monkeypatch, argv, expected):
    from mclnf_dist.jobs import city, report, signals
    from mclnf_dist.sweeps import driver

    for module, name in ((city, "run_city"), (signals, "run_signals"), (report, "run_report")):
        monkeypatch.setattr(module, name, lambda cfg: pytest.fail("work started"))
    monkeypatch.setattr(driver, "run_sweep", lambda cfg: pytest.fail("work started"))
    assert expected in cli_error(capsys, argv)


def test_run_settings_flags_have_no_prefix_and_nest_under_run():
    cfg = parse_config(
        SignalsConfig,
        ["--seed", "3", "--device", "cpu", "--tracking-uri", "sqlite:///x.db", "--verbose"],
    )
    assert cfg.run == RunSettings(3, "cpu", "sqlite:///x.db", "mclnf-signals", True)
    assert CityExperimentConfig().run.experiment == "mclnf-city"


def test_yaml_run_settings_are_a_run_mapping(tmp_path):
    cfg = load_yaml_config(SignalsConfig, yaml_file(tmp_path, "run: {seed: 4, experiment: e}\n"))
    assert (cfg.run.seed, cfg.run.experiment) == (4, "e")
    with pytest.raises(MclnfError, match="unknown key 'seed'"):
        load_yaml_config(SignalsConfig, yaml_file(tmp_path, "seed: 4\n"))


def config_classes(root: type, seen: set | None = None) -> set[type]:
    """``root`` and every dataclass nested in it."""
    seen = set() if seen is None else seen
    seen.add(root)
    for hint in typing.get_type_hints(root).values():
        if dataclasses.is_dataclass(hint) and hint not in seen:
            config_classes(hint, seen)
    return seen


ROOTS = (
    SignalsConfig,
    CityExperimentConfig,
    SweepConfig,
    ReportConfig,
    IngestOptions,
    CityConfig,
    MetricSpec,
)


def test_every_numeric_field_of_every_config_declares_a_range():
    classes = set().union(*(config_classes(root) for root in ROOTS))
    assert {TrainConfig, MetaConfig, FimConfig, AdaptConfig, FieldConfig} <= classes
    assert {RadianceFieldConfig, CityDataConfig, DataConfig, RunSettings} <= classes
    missing = {c.__name__: numeric_fields_without_range(c) for c in classes}
    assert not {name: fields for name, fields in missing.items() if fields}


def test_the_range_walker_finds_an_undeclared_field():
    @dataclasses.dataclass
    class New:
        ok: PositiveInt = 1
        steps: int = 3
        rates: tuple[float, ...] = ()
        maybe: int | None = None

    assert numeric_fields_without_range(New) == ["steps", "rates", "maybe"]


def test_choice_tuples_are_derived_from_their_literals():
    from mclnf_dist.meta.methods import METHODS, MethodName
    from mclnf_dist.signals.builtin import BUILTIN_SETS
    from mclnf_dist.signals.loading import MODALITIES

    assert tuple(METHODS) == typing.get_args(MethodName)
    assert tuple(BUILTIN_SETS) == MODALITIES


def test_check_config_catches_values_set_in_code():
    cfg = CityExperimentConfig()
    cfg.meta.outer_steps = 0
    with pytest.raises(MclnfError, match=r"^meta.outer_steps must be >= 1, got 0$"):
        check_config(cfg)
    cfg.meta.outer_steps, cfg.methods = 1, ("random", "magic")
    with pytest.raises(MclnfError, match=r"^methods must be one of: .*got 'magic'$"):
        check_config(cfg)
    cfg.methods = ("random",)
    cfg.meta.outer_steps = "3"  # the one walker checks types too, not only ranges and choices
    with pytest.raises(MclnfError, match=r"^meta.outer_steps must be int, got '3'$"):
        check_config(cfg)
    cfg.meta.outer_steps = numpy.int64(3)  # what a sweep's sampler may hand back
    check_config(cfg)
