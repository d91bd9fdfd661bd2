"""Fanned-out CPU tasks share the free CPUs: one task gets all of them (a single block or
method is not left on one thread of a 2-CPU machine), as many tasks as CPUs get one each."""

import os

import torch

from mclnf_dist.distributed.fanout import cpu_share, fan_out, run_tasks


def threads_and_value(value: int) -> tuple[int, int]:
    return torch.get_num_threads(), value


def test_one_task_gets_every_free_cpu_and_many_share_them(ray_local):
    free = int(ray_local.available_resources().get("CPU", 0))  # 2, unless a test left an actor
    assert free >= 1
    assert cpu_share(1, 1) == free and cpu_share(1, 6) == 1
    assert cpu_share(free + 1, 1) == free + 1  # never fewer than asked
    single = dict(run_tasks(threads_and_value, [(7,)], parallel=True))
    assert single == {0: (free, 7)}
    pair = dict(run_tasks(threads_and_value, [(1,), (2,)], parallel=True))
    each = max(1, free // 2)
    assert pair == {0: (each, 1), 1: (each, 2)}


def test_one_rule_decides_whether_jobs_fan_out(monkeypatch):
    """Asked for (> 1) or not (0, 1) whatever the device; auto (-1): a multi-core CPU only."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert fan_out(2, "cuda") and not fan_out(1, "cpu") and not fan_out(0, "cpu")
    assert fan_out(-1, "cpu") and not fan_out(-1, "cuda")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert not fan_out(-1, "cpu")
