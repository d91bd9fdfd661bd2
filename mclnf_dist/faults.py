"""Faults injected on purpose, for the tests that show recovery: a Train worker's death, an ingest
task's crash.

A test arms a fault in the environment of the process that starts the work (the driver), never
through a product flag or config. The driver reads it once and hands the value to the Ray tasks
with their work, so a cluster started before the test was armed still sees it.
"""

import os

from mclnf_dist.errors import MclnfError

WORKER_DEATH_ROUND = "MCLNF_FAULT_WORKER_DEATH_ROUND"
"""Meta-training: Train worker rank 1 dies (``os._exit``) at this round, once per run."""
INGEST_CHUNK = "MCLNF_FAULT_INGEST_CHUNK"
"""Ingest: the task of this chunk raises after writing one shard (a crash mid-chunk)."""


def armed(name: str) -> int | None:
    """The number a fault is armed with in the environment, or None when it is not armed."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise MclnfError(f"environment {name} must be a non-negative integer, got {value!r}")
    return int(value)
