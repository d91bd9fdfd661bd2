"""Distributed meta-training of a radiance field's ``theta_0`` on Ray Train (V2 API).

Each Train worker owns a set of blocks (round-robin over the meta-training blocks) and, every round:
pulls ``theta_0`` from the meta-init server (one shared object reference), streams a fresh batch of
each owned block's rays from the Arrow store, runs the inner loops of its blocks as one stacked
batch (MAML / FOMAML / Reptile, MSE or FIM loss), pushes the meta-gradient, waits for the round to
close, and reports. The server owns all state, so a replaced worker (FailureConfig) or a restarted
driver simply continues from the server's version; Train checkpoints hold a copy of ``theta_0``.
"""

import os
import tempfile
import time
from dataclasses import dataclass

import ray
import torch

from mclnf_dist.data.ray_stream import stream_block_rays
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig, block_episode, meta_gradient
from mclnf_dist.nerf.field import RadianceFieldConfig, pack_rays

STARTED = time.perf_counter()
START_ROUND: dict[int, int] = {}


@dataclass
class WorkerJob:
    """Everything a Train worker needs (shipped once as ``train_loop_config``)."""

    field: RadianceFieldConfig
    meta: MetaConfig
    fim: FimConfig | None
    data_uri: str
    blocks: list[int]
    rays_per_task: int
    rounds: int
    server_name: str
    server_namespace: str | None
    cpus_per_worker: int
    seed: int
    checkpoint_every: int = 5
    fail_at_round: int = -1
    """Testing only: rank 1 raises at this round once (an injected worker death)."""
    fail_marker: str = ""
    schedule: str = "modular"
    """:func:`~mclnf_dist.meta.meta_learning.block_episode`'s: ``modular`` (maml, mod, mim) or
    ``sequential`` (oml)."""


def assigned_blocks(blocks: list[int], rank: int, world: int) -> list[int]:
    """Round-robin share of ``blocks`` for worker ``rank`` of ``world``."""
    return blocks[rank::world]


def block_batch(streams: dict, device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next ``2n`` rays of every owned block -> x (B, 2n, 8), y (B, 2n, 3)."""
    xs, ys = [], []
    for stream in streams.values():
        batch = next(stream)
        xs.append(pack_rays(batch["origin"], batch["direction"], batch["near"], batch["far"]))
        ys.append(batch["rgb"])
    return torch.stack(xs).to(device), torch.stack(ys).to(device)


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train loop (every worker runs it)."""
    job: WorkerJob = config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.cpus_per_worker)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    server = ray.get_actor(job.server_name, namespace=job.server_namespace)
    mine = assigned_blocks(job.blocks, rank, world)
    streams = {
        block: stream_block_rays(
            job.data_uri,
            block,
            batch_size=2 * job.rays_per_task,
            seed=job.seed * 1000 + rank,
            epochs=None,
            drop_last=True,
        )
        for block in mine
    }
    first = True
    # Seconds of this worker's previous push and round-barrier wait: known only after the push,
    # so they travel with the next round's metrics (0 in a worker's first round).
    lagged = {"push_s": 0.0, "wait_s": 0.0}
    while True:
        started = time.perf_counter()
        version, [ref] = ray.get(server.publish.remote())
        if first:
            START_ROUND[0], first = version, False
        if version >= job.rounds:
            break
        maybe_fail(job, rank, version)
        theta0 = {k: v.to(device) for k, v in ray.get(ref).items()}
        pulled = time.perf_counter()
        x, y = block_batch(streams, device, job.rays_per_task)
        episode = block_episode(job.schedule, job.meta, theta0, x, y, job.rays_per_task)
        grads, metrics = meta_gradient(job.field, job.meta, job.fim, theta0, episode)
        grads = {k: v.detach().cpu() for k, v in grads.items()}
        computed = time.perf_counter()
        timing = {"pull_s": pulled - started, "compute_s": computed - pulled, **lagged}
        ray.get(server.push.remote(rank, version, grads, {**metrics, **timing}))
        pushed = time.perf_counter()
        ray.get(server.wait_for_version.remote(version + 1))
        lagged = {"push_s": pushed - computed, "wait_s": time.perf_counter() - pushed}
        report(job, rank, version + 1, metrics, server)


def print_progress(job: WorkerJob, round_: int, metrics: dict) -> None:
    """A log line per round: outer PSNR, rays/s through the inner loops of all workers, ETA."""
    rounds_done = round_ - START_ROUND.get(0, 0)
    elapsed = time.perf_counter() - STARTED
    rays_per_s = rounds_done * 2 * job.rays_per_task * len(job.blocks) / max(elapsed, 1e-9)
    eta = elapsed / max(rounds_done, 1) * (job.rounds - round_)
    print(
        f"[meta-train] round {round_}/{job.rounds}: outer PSNR {metrics['outer_psnr']:.2f} dB, "
        f"{rays_per_s:.0f} rays/s, ETA {eta:.0f}s",
        flush=True,
    )


def maybe_fail(job: WorkerJob, rank: int, version: int) -> None:
    if rank == 1 and version == job.fail_at_round and not os.path.exists(job.fail_marker):
        open(job.fail_marker, "w").close()  # only the first attempt dies
        os._exit(1)  # a hard worker death, not a Python exception


def report(job: WorkerJob, rank: int, round_: int, metrics: dict, server) -> None:
    """All workers report every round; rank 0 attaches ``theta_0`` every few rounds."""
    done = {"round": round_, **metrics}
    if rank == 0:
        print_progress(job, round_, metrics)
    if rank != 0 or (round_ % job.checkpoint_every and round_ != job.rounds):
        ray.train.report(done)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(
            {"round": round_, "theta0": ray.get(server.params.remote())},
            os.path.join(folder, "theta0.pt"),
        )
        ray.train.report(done, checkpoint=ray.train.Checkpoint.from_directory(folder))
