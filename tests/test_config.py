"""The one config system: ``--config`` YAML validated field by field."""

import pytest

from mclnf_dist.config import load_yaml_config
from mclnf_dist.errors import MclnfError
from mclnf_dist.jobs.signals import SignalsConfig


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
