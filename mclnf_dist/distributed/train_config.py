"""The distributed meta-training's settings, apart from the Ray code that runs them (so the job's
config classes load where Ray is not installed: config tools, a GPU box checking one trial)."""

from dataclasses import dataclass
from typing import Annotated

from mclnf_dist.config import NonNegativeInt, PositiveInt, Range
from mclnf_dist.errors import MclnfError


@dataclass
class TrainConfig:
    """Distributed meta-training: workers, rounds, storage, fault tolerance."""

    num_workers: NonNegativeInt = 2
    """Ray Train workers (each owns a share of the meta-training blocks); 0 runs in-process."""
    cpus_per_worker: PositiveInt = 1
    """CPUs (and torch threads) per worker."""
    use_gpu: bool = False
    """One GPU per worker (CUDA is used inside a worker whenever it has one)."""
    rounds: PositiveInt = 300
    """Meta-rounds (one synchronous outer step each). Demo city, held-out blocks, step 64:
    120 rounds left theta_0 ~1 dB above random init, 300 (at outer lr 1e-2) ~5 dB."""
    rays_per_task: PositiveInt = 256
    """Rays per block in the inner loop (the same number again are the query)."""
    asynchronous: bool = False
    """Bounded-staleness asynchronous updates instead of synchronous rounds."""
    max_staleness: NonNegativeInt = 1
    """Asynchronous mode: oldest version a gradient may be computed on."""
    max_failures: Annotated[int, Range(ge=0, special=((-1, "no limit"),))] = 2
    """Worker-group restarts Ray Train may do before the run fails (-1: no limit)."""
    fail_at_round: Annotated[int, Range(ge=1, special=((-1, "never"),))] = -1
    """Testing only: worker rank 1 dies (os._exit) at this round, once per run name (-1: never)."""


def check_workers(num_workers: int, blocks: list[int]) -> None:
    """Raise :class:`MclnfError` when some worker would own no meta-training block."""
    if max(1, num_workers) > len(blocks):
        raise MclnfError(
            f"num_workers={num_workers} is more than the {len(blocks)} meta-training "
            f"blocks {blocks} (expected at most one worker per block)"
        )
