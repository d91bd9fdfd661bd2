"""Fanned-out CPU tasks share the free CPUs: one task gets all of them (a single block or
method is not left on one thread of a 2-CPU machine), as many tasks as CPUs get one each."""

import torch

from mclnf_dist.distributed.fanout import cpu_share, run_tasks


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
