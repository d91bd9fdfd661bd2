"""Driver side of distributed meta-training: start the meta-init server, run the Train workers."""

import os
import threading
import time
from pathlib import Path

import ray

from mclnf_dist.distributed.checkpoints import CheckpointStore
from mclnf_dist.distributed.meta_init_server import start_meta_init_server
from mclnf_dist.distributed.meta_train_loop import WorkerJob, train_loop_per_worker
from mclnf_dist.distributed.train_config import TrainConfig, check_workers
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.interrupts import run_interruptibly
from mclnf_dist.progress import ProgressLog
from mclnf_dist.state import Fingerprint, content_digest, fingerprint


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
    checkpoints = f"{storage_uri.rstrip('/')}/{run_name}/meta_init"
    shaped_by = meta_fingerprint(job, train, theta0, outer_lr, grad_clip)
    CheckpointStore(checkpoints, fingerprint=shaped_by).check_latest()  # one line, before Ray
    server = start_meta_init_server(
        job.server_name,
        job.server_namespace,
        theta0=theta0,
        outer_lr=outer_lr,
        grad_clip=grad_clip,
        storage_uri=checkpoints,
        fingerprint=shaped_by,
        num_workers=world,
        total_rounds=job.rounds,
        asynchronous=train.asynchronous,
        max_staleness=train.max_staleness,
    )
    log = ProgressLog(job.label)
    resumed = ray.get(server.status.remote()).version
    if resumed:
        log.info(f"{run_name}: resuming at round {resumed}/{job.rounds}")
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
    with ServerProgress(server, log, job, resumed):
        run_interruptibly(trainer.fit)  # Ray Train's SIGINT handler stays out
    status = ray.get(server.status.remote())
    params = ray.get(server.params.remote())
    ray.kill(server)  # state is in storage; a later run of the same name restores it
    return params, status.history


def meta_fingerprint(
    job: WorkerJob, train: TrainConfig, theta0: Params, outer_lr: float, grad_clip: float
) -> Fingerprint:
    """What shapes a meta-init checkpoint: the field, inner loop, FIM loss, data, workers,
    outer optimiser and the random init it started from. Not ``rounds``: the outer Adam has a
    constant rate, so a resumed run may continue a finished one to a larger budget."""
    return fingerprint(
        field=job.field,
        meta=job.meta,
        fim=job.fim,
        data=job.data_uri,
        blocks=job.blocks,
        avoid_blocks=job.avoid_blocks,
        rays_per_task=job.rays_per_task,
        schedule=job.schedule,
        seed=job.seed,
        workers=max(1, train.num_workers),
        asynchronous=train.asynchronous,
        max_staleness=train.max_staleness,
        outer_lr=outer_lr,
        grad_clip=grad_clip,
        init=content_digest(theta0),
    )


class ServerProgress:
    """Progress of a distributed meta-training, from the driver: a thread polls the meta-init
    server and advances one bar (a line every ``interval_s`` off a terminal: rounds, rays/s, ETA,
    outer PSNR). Workers print nothing, so a line appears once whatever the worker count. Rates
    count from the first round seen, not from the worker group's start-up."""

    def __init__(
        self,
        server: ray.actor.ActorHandle,
        log: ProgressLog,
        job: WorkerJob,
        start: int,
        interval_s: float = 30.0,
    ) -> None:
        rays_per_round = 2 * job.rays_per_task * len(job.blocks)
        self.bar = log.bar("meta-train", job.rounds, "round", rays_per_round)
        self.bar.interval_s = interval_s
        self.log, self.start, self.seen = log, start, False
        self.server, self.stop = server, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        while not self.stop.wait(1.0):
            self.show()

    def show(self) -> None:
        version, last = ray.get(self.server.progress.remote())
        if last is None or version <= self.start:
            return
        if not self.seen:  # the clock starts at the first finished round
            self.seen = True
            self.bar.start_at(version)
            self.bar.start = self.bar.last_print = time.perf_counter()
        elif version > self.bar.count:
            self.bar.goto(version, outer_psnr=f"{last['outer_psnr']:.2f}dB")

    def __enter__(self) -> "ServerProgress":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            seen = self.seen
            self.show()  # the last line: all rounds, the final rate
            if not seen:  # finished before the first poll: one summary line instead
                version, last = ray.get(self.server.progress.remote())
                psnr = f", outer PSNR {last['outer_psnr']:.2f} dB" if last else ""
                self.log.info(f"meta-train: {version} rounds done{psnr}")
        self.bar.close()
