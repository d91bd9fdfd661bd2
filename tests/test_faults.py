"""Faults are armed through the environment only, and a bad value is one line."""

import pytest

from mclnf_dist import faults
from mclnf_dist.errors import MclnfError


def test_a_fault_is_unarmed_until_its_variable_holds_a_number(monkeypatch):
    monkeypatch.delenv(faults.WORKER_DEATH_ROUND, raising=False)
    assert faults.armed(faults.WORKER_DEATH_ROUND) is None
    monkeypatch.setenv(faults.WORKER_DEATH_ROUND, " 3 ")
    assert faults.armed(faults.WORKER_DEATH_ROUND) == 3
    monkeypatch.setenv(faults.INGEST_CHUNK, "two")
    with pytest.raises(MclnfError, match=r"^environment MCLNF_FAULT_INGEST_CHUNK must be a non"):
        faults.armed(faults.INGEST_CHUNK)


def test_no_product_config_carries_a_fault_switch():
    from mclnf_dist.config import flatten, to_dict
    from mclnf_dist.experiments.city_config import CityExperimentConfig
    from mclnf_dist.jobs.dataset import Ingest
    from mclnf_dist.raystore.store import IngestOptions

    for config in (CityExperimentConfig(), IngestOptions(), Ingest(scene="s", uri="u")):
        names = [key.rsplit(".", 1)[-1] for key in flatten(to_dict(config))]
        assert names and not [n for n in names if n.startswith(("fail", "die"))], names
