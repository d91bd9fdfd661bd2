"""Driver side of distributed meta-training: start the meta-init server, run the Train workers."""

import os
from pathlib import Path

import ray

from mclnf_dist.distributed.meta_init_server import start_meta_init_server
from mclnf_dist.distributed.meta_train_loop import WorkerJob, train_loop_per_worker
from mclnf_dist.distributed.train_config import TrainConfig, check_workers
from mclnf_dist.fields.stacked_mlp import Params


def storage_path(uri: str) -> str:
    """Ray Train wants an absolute local path or a URI."""
    return uri if "://" in uri else str(Path(uri).resolve())


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
