"""Distributed meta-training of a radiance field's ``theta_0`` on Ray Train (V2 API).

Every Train worker runs the one outer loop (:func:`~mclnf_dist.meta.outer_loop.meta_train_loop`)
with two parts of its own: its episodes stream its round-robin share of the meta-training blocks
from the Arrow store (:class:`~mclnf_dist.distributed.block_episodes.BlockRayEpisodes`), and
``theta_0`` lives in the meta-init server (:class:`ServerStore`): pull ``theta_0``, push the
meta-gradient, wait for the round to close. The server owns all state and is the one checkpoint
(read on resume), so a replaced worker or a restarted driver continues from the server's version;
workers report metrics to Train, never checkpoints.
"""

import os
import time
from dataclasses import dataclass, field

import ray
import torch

from mclnf_dist.distributed.block_episodes import BlockRayEpisodes, assigned_blocks, worker_seed
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.outer_loop import meta_train_loop
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.nerf.sampling import seeded_jitter


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
    die_at_round: int | None = None
    """An injected fault (:mod:`mclnf_dist.faults`): rank 1 dies at this round, once."""
    died_marker: str = ""
    """The file that says the injected death has happened (so the restarted group goes on)."""
    schedule: str = "modular"
    """:func:`~mclnf_dist.meta.meta_learning.block_episode`'s: ``modular`` (maml, mod, mim) or
    ``sequential`` (oml)."""
    label: str = "meta-train"
    """Prefix of the progress lines."""
    avoid_blocks: list[int] = field(default_factory=list)
    """Blocks no meta-training ray may cross (the city's non-meta blocks: a ray is stored in every
    block it crosses, so without this the held-out blocks' rays would be meta-trained on)."""


class ServerStore:
    """The meta-init server as the outer loop's parameter store, seen from one worker.

    Adds the worker's timings to the metrics it pushes: ``pull_s`` (publish + fetch),
    ``compute_s``, and the previous round's ``push_s``/``wait_s`` (known only after the push).
    """

    def __init__(self, job: WorkerJob, rank: int, device: torch.device) -> None:
        self.job, self.rank, self.device = job, rank, device
        self.server = ray.get_actor(job.server_name, namespace=job.server_namespace)
        self.lagged = {"push_s": 0.0, "wait_s": 0.0}
        self.pulled_at = self.pull_s = 0.0

    def pull(self) -> tuple[int, Params]:
        started = time.perf_counter()
        version, [ref] = ray.get(self.server.publish.remote())
        maybe_fail(self.job, self.rank, version)
        theta0 = {k: v.to(self.device) for k, v in ray.get(ref).items()}
        self.pulled_at = time.perf_counter()
        self.pull_s = self.pulled_at - started
        return version, theta0

    def push(self, version: int, grads: Params, metrics: dict[str, float]) -> None:
        computed = time.perf_counter()
        grads = {k: v.detach().cpu() for k, v in grads.items()}
        timing = {"pull_s": self.pull_s, "compute_s": computed - self.pulled_at, **self.lagged}
        ray.get(self.server.push.remote(self.rank, version, grads, {**metrics, **timing}))
        pushed = time.perf_counter()
        ray.get(self.server.wait_for_version.remote(version + 1))
        self.lagged = {"push_s": pushed - computed, "wait_s": time.perf_counter() - pushed}


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train loop (every worker runs it)."""
    job: WorkerJob = config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.cpus_per_worker)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mine = assigned_blocks(job.blocks, rank, world)
    episodes = BlockRayEpisodes(
        job.data_uri,
        mine,
        job.rays_per_task,
        worker_seed(job.seed, rank),
        job.schedule,
        job.meta,
        device,
        avoid_blocks=job.avoid_blocks,
    )
    store = ServerStore(job, rank, device)

    def on_round(done: int, metrics: dict[str, float]) -> None:
        ray.train.report({"round": done, **metrics})  # progress: the driver polls the server

    with seeded_jitter(worker_seed(job.seed, rank)):  # the radiance field's sample jitter
        meta_train_loop(job.field, job.meta, job.fim, store, episodes, job.rounds, on_round)


def maybe_fail(job: WorkerJob, rank: int, version: int) -> None:
    if rank == 1 and version == job.die_at_round and not os.path.exists(job.died_marker):
        open(job.died_marker, "w").close()  # only the first attempt dies
        os._exit(1)  # a hard worker death, not a Python exception
