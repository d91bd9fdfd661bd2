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


def started_at(value: int) -> tuple[float, int]:
    import time

    start = time.time()
    time.sleep(3.0)  # longer than starting a Ray worker process
    return start, value


def test_costliest_tasks_are_submitted_first_and_results_keep_their_index(ray_local):
    """Four 1-CPU tasks on 2 idle Ray CPUs: the two with the highest cost start first (longest
    first leaves short tasks for the end), and each result comes back under its own index. (Ray
    does not promise to start the rest in submission order.)"""
    import time

    assert ray_local.cluster_resources()["CPU"] == 2  # the session's local Ray
    deadline = time.monotonic() + 30  # an earlier test's task may still hold a CPU
    while ray_local.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    cost = [(False, 0), (True, 1), (False, 5), (True, 0)]  # order: 1, 3, 2, 0
    got = dict(run_tasks(started_at, [(10,), (11,), (12,), (13,)], parallel=True, cost=cost))
    assert {i: v for i, (_, v) in got.items()} == {0: 10, 1: 11, 2: 12, 3: 13}
    first_two = sorted(got, key=lambda i: got[i][0])[:2]
    assert sorted(first_two) == [1, 3], got
