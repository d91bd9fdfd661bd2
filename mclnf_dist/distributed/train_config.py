"""Settings of distributed meta-training and of block training, apart from the Ray code that runs
them (so the job's config classes load where Ray is not installed: config tools, a GPU box
checking one trial)."""

from dataclasses import dataclass
from typing import Annotated, Literal

from mclnf_dist.config import NonNegativeInt, PositiveFloat, PositiveInt, Range
from mclnf_dist.errors import MclnfError

Precision = Literal["auto", "fp32", "bf16"]


@dataclass
class TrainConfig:
    """Distributed meta-training: workers, rounds, storage, fault tolerance."""

    num_workers: NonNegativeInt = 2
    """Ray Train workers (each owns a share of the meta-training blocks); 0 runs in-process."""
    cpus_per_worker: PositiveInt = 1
    """CPUs (and torch threads) per worker."""
    use_gpu: bool = False
    """One GPU per worker (CUDA is used inside a worker whenever it has one)."""
    rays_per_task: PositiveInt = 256
    """Rays per block in the inner loop (the same number again are the query)."""
    asynchronous: bool = False
    """Bounded-staleness asynchronous updates instead of synchronous rounds."""
    max_staleness: NonNegativeInt = 1
    """Asynchronous mode: oldest version a gradient may be computed on."""
    max_failures: Annotated[int, Range(ge=0, special=((-1, "no limit"),))] = 2
    """Worker-group restarts Ray Train may do before the run fails (-1: no limit)."""


@dataclass
class BlockTrainingConfig:
    """Block training after meta-training: every block's module on all its rays."""

    steps: PositiveInt = 256
    """Adam steps per block (CPU-sized default; thousands on a GPU)."""
    batch_rays: PositiveInt = 1024
    """Rays per step, streamed from the block's training views."""
    lr: PositiveFloat = 5e-3
    """Adam learning rate at step 1, the same for every init."""
    final_lr_fraction: Annotated[float, Range(gt=0, le=1)] = 0.1
    """The rate decays exponentially to ``lr * final_lr_fraction`` at the last step."""
    shuffle_buffer: PositiveInt = 262144
    """Rays decoded and mixed at once: the stream window (memory is a few windows, whatever the
    block's size)."""
    checkpoint_every: PositiveInt = 100
    """Steps between a block's checkpoints (and one when it is done)."""
    probe_rays: PositiveInt = 2048
    """Held-out-view rays of the block scored along the way (the PSNR-vs-step curve)."""
    curve_points: NonNegativeInt = 8
    """Evenly spaced curve steps besides 1, 2, 4, ... (the curve's resolution)."""
    precision: Precision = "auto"
    """Arithmetic of the forward pass: ``bf16`` autocast (the networks' matrix products in
    bfloat16, volume rendering and the optimiser in float32), ``fp32``, or ``auto``: bf16 on a
    CUDA device, fp32 on a CPU (where bf16 matrix products are no faster on most cores)."""


def check_workers(num_workers: int, blocks: list[int]) -> None:
    """Raise :class:`MclnfError` when some worker would own no meta-training block."""
    if max(1, num_workers) > len(blocks):
        raise MclnfError(
            f"num_workers={num_workers} is more than the {len(blocks)} meta-training "
            f"blocks {blocks} (expected at most one worker per block)"
        )
