"""Driver side of distributed meta-training: start the meta-init server, run the Train workers."""

import os
from dataclasses import dataclass
from pathlib import Path

import ray

from mclnf_dist.dist.meta_init_server import start_meta_init_server
from mclnf_dist.dist.meta_train_loop import WorkerJob, train_loop_per_worker
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params


@dataclass
class TrainConfig:
    """Distributed meta-training: workers, rounds, storage, fault tolerance."""

    num_workers: int = 2
    """Ray Train workers (each owns a share of the meta-training blocks); 0 runs in-process."""
    cpus_per_worker: int = 1
    """CPUs (and torch threads) per worker."""
    use_gpu: bool = False
    """One GPU per worker (CUDA is used inside a worker whenever it has one)."""
    rounds: int = 300
    """Meta-rounds (one synchronous outer step each). Demo city, held-out blocks, step 64:
    120 rounds left theta_0 ~1 dB above random init, 300 (at outer lr 1e-2) ~5 dB."""
    rays_per_task: int = 256
    """Rays per block in the inner loop (the same number again are the query)."""
    asynchronous: bool = False
    """Bounded-staleness asynchronous updates instead of synchronous rounds."""
    max_staleness: int = 1
    """Asynchronous mode: oldest version a gradient may be computed on."""
    max_failures: int = 2
    """Worker-group restarts Ray Train may do before the run fails."""
    checkpoint_every: int = 5
    """Rounds between Train checkpoints (the meta-init server checkpoints every round)."""
    fail_at_round: int = -1
    """Testing only: worker rank 1 dies (os._exit) at this round, once per run name."""


def storage_path(uri: str) -> str:
    """Ray Train wants an absolute local path or a URI."""
    return uri if "://" in uri else str(Path(uri).resolve())


def check_workers(num_workers: int, blocks: list[int]) -> None:
    """Raise :class:`MclnfError` when some worker would own no meta-training block."""
    if max(1, num_workers) > len(blocks):
        raise MclnfError(
            f"num_workers={num_workers} is more than the {len(blocks)} meta-training "
            f"blocks {blocks} (expected at most one worker per block)"
        )


def meta_train_distributed(
    job: WorkerJob,
    train: TrainConfig,
    theta0: Params,
    outer_lr: float,
    grad_clip: float,
    run_name: str,
    storage_uri: str,
) -> tuple[Params, list[dict]]:
    """Meta-train ``theta0`` on Ray Train; resumable by re-running with the same ``run_name``.

    Returns the meta-learned ``theta_0`` and the per-round metrics kept by the server.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    world = max(1, train.num_workers)
    check_workers(train.num_workers, job.blocks)
    server = start_meta_init_server(
        job.server_name,
        job.server_namespace,
        theta0=theta0,
        outer_lr=outer_lr,
        grad_clip=grad_clip,
        storage_uri=f"{storage_uri.rstrip('/')}/{run_name}/meta_init",
        num_workers=world,
        total_rounds=job.rounds,
        asynchronous=train.asynchronous,
        max_staleness=train.max_staleness,
    )
    resumed = ray.get(server.status.remote())["version"]
    if resumed:
        print(f"[meta-train] {run_name}: resuming at round {resumed}/{job.rounds}", flush=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path(storage_uri),
            failure_config=FailureConfig(max_failures=train.max_failures),
        ),
    )
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    trainer.fit()
    status = ray.get(server.status.remote())
    params = ray.get(server.params.remote())
    ray.kill(server)  # state is in storage; a later run of the same name restores it
    return params, status["history"]
