"""Independent jobs (one per method, one per block) fanned out as Ray tasks, or run in-process.

Each task pins torch to its own CPUs: two processes each running torch's default thread pool on
two cores oversubscribe them and run several times *slower* than one process (measured here), so a
task asking Ray for ``cpus`` CPUs also uses exactly ``cpus`` torch threads.

Ray is joined at ``RAY_ADDRESS`` when set (``ray job submit``, a cluster), else started embedded.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mclnf_dist.runtime import ensure_ray


def fan_out(workers: int, device_type: str) -> bool:
    """The one rule for running independent jobs (methods, blocks) as parallel Ray tasks:
    ``workers`` > 1 asks for it, 0 or 1 runs them in this process, -1 (auto) fans out on a
    multi-core CPU and not on a GPU (one device runs one job at a time best)."""
    if workers == -1:
        return device_type == "cpu" and (os.cpu_count() or 1) > 1
    return workers > 1


def _with_threads(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


def cpu_share(requested: int, calls: int) -> int:
    """CPUs (and torch threads) of each of ``calls`` CPU tasks: the free CPUs split evenly
    between them, at most one node's CPUs, at least ``requested``. One block or one method on
    a 2-CPU machine gets both CPUs (as one 1-CPU task it ran at half the speed); six get one
    each."""
    import ray

    free = int(ray.available_resources().get("CPU", 0))
    largest_node = max(
        (int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")),
        default=0,
    )
    share = min(largest_node, free // max(1, min(calls, free or 1)))
    return max(requested, share)


def run_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    parallel: bool,
    cpus_per_task: int = 1,
    gpus_per_task: float = 0.0,
    on_idle: Callable[[], None] | None = None,
    idle_s: float = 15.0,
    cost: Sequence[Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(*calls[index]))`` as each finishes.

    Args:
        fn: a module-level function (it is shipped to Ray workers by reference).
        calls: the argument tuples.
        parallel: fan out as Ray tasks; False runs them here, in order.
        cpus_per_task: Ray CPUs of each task, and its torch threads, at least: CPU tasks fewer
            than the free CPUs share them all (:func:`cpu_share`).
        gpus_per_task: Ray GPUs of each task (fractions share a GPU).
        on_idle: called every ``idle_s`` seconds in which no task finished (progress lines of
            the running tasks).
        cost: a sortable cost estimate per call: the costliest are submitted first, so the last
            tasks to run are short ones and fewer CPUs wait idle at the end (longest first).
            Results are the same in any order; only the wall time changes.
    """
    if not parallel:
        for index, args in enumerate(calls):
            yield index, fn(*args)
        return
    import ray

    ensure_ray()
    if gpus_per_task == 0:
        cpus_per_task = cpu_share(cpus_per_task, len(calls))
    remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(_with_threads)
    order = sorted(range(len(calls)), key=lambda i: cost[i], reverse=True) if cost else None
    pending = {remote.remote(cpus_per_task, fn, calls[i]): i for i in order or range(len(calls))}
    try:
        while pending:
            timeout = idle_s if on_idle is not None else None
            done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not done:
                on_idle()
                continue
            index = pending.pop(done[0])
            yield index, ray.get(done[0])
    finally:  # Ctrl-C, an error, or a caller that stops early: nothing keeps running
        for ref in pending:
            ray.cancel(ref, force=True)
