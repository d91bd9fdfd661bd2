"""Scaling of distributed meta-training: meta-rounds/s with 1 and 2 Ray Train workers.

Prints ONE JSON line:
    machine            platform, cpu_count, torch version, torch threads (of each worker: 1)
    setup              blocks, rays per task, rounds measured, inner steps, field
    workers_1/2        rounds_per_s, mean seconds per round of each phase in a worker:
                       pull_s (publish + fetch theta_0), compute_s (stream rays + inner loops +
                       meta-gradient), push_s (push; the last pusher also waits for the server's
                       outer step and checkpoint), wait_s (round barrier: waiting for the others)
    scaling_ratio      rounds/s(2 workers) / rounds/s(1 worker) (target >= 1.5)
    compute_scaling    the same from compute_s alone (what the cores deliver, without the actor)
    actor_fraction     (pull_s + push_s) / round time with 2 workers (target <= 0.10)
    barrier_fraction   wait_s / round time with 2 workers (load imbalance, a straggler)

Each worker gets 1 CPU and 1 torch thread; the same 4 meta-blocks are split round-robin, so with
2 workers each round does the same work on two cores. Both runs use one generated city and store.
Round times come from the meta-init server's history (time between outer steps); the first round
(Train start-up) is left out. This machine is shared: numbers move with its load, so the runs are
interleaved (1, 2, 1, 2 workers) and the best run of each is kept.

    python bench/scaling.py [--rounds 10] [--rays-per-task 1024] [--repeats 2] [--workdir DIR]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

KEYS = ("pull_s", "compute_s", "push_s", "wait_s")


def summarize(history: list[dict]) -> dict:
    """Rounds/s and mean phase seconds over all rounds but the first."""
    rounds = history[1:]
    seconds = sum(r["round_time_s"] for r in rounds)
    out = {"rounds_per_s": len(rounds) / seconds, "round_s": seconds / len(rounds)}
    out.update({k: statistics.fmean(r[k] for r in rounds) for k in KEYS})
    # push_s/wait_s of a round travel with the next round's metrics: drop round 1's zeros too
    for key in ("push_s", "wait_s"):
        out[key] = statistics.fmean(r[key] for r in rounds[1:]) if len(rounds) > 1 else 0.0
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rays-per-task", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs; best is kept")
    parser.add_argument("--workdir", default="")
    opts = parser.parse_args()

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # before Ray starts
    import ray

    from mclnf_dist.city.data import CityDataConfig, prepare_city
    from mclnf_dist.distributed.meta_train_loop import WorkerJob
    from mclnf_dist.distributed.meta_trainer import meta_train_distributed
    from mclnf_dist.distributed.train_config import TrainConfig
    from mclnf_dist.experiments.city_config import CityExperimentConfig
    from mclnf_dist.nerf.field import field_for_scene, init_radiance_params
    from mclnf_dist.progress import ProgressLog
    from mclnf_dist.runtime import ensure_ray
    from mclnf_dist.scenes.scene import load_scene

    work = Path(opts.workdir or tempfile.mkdtemp(prefix="mclnf-scaling-"))
    blocks = [0, 1, 2, 3]
    cfg = CityExperimentConfig()
    ensure_ray(num_cpus=2)
    try:
        data = CityDataConfig(
            work_dir=str(work),
            blocks_x=2,
            blocks_y=2,
            image_size=32,
            views_per_block=8,
            meta_blocks=tuple(blocks),
        )
        city = prepare_city(data, ProgressLog("bench"))
        scene = load_scene(city.scene_root, "all")
        field = field_for_scene(scene, mlp=cfg.field.mlp, num_samples=cfg.field.num_samples)
        theta0 = init_radiance_params(field, 1, torch.Generator().manual_seed(0))
        results = {}
        for workers in [1, 2] * opts.repeats:  # interleaved: load changes hit both alike
            name = f"scaling-{workers}-{time.time_ns()}"
            job = WorkerJob(
                field=field,
                meta=cfg.meta,
                fim=None,
                data_uri=city.train_uri,
                blocks=blocks,
                rays_per_task=opts.rays_per_task,
                rounds=opts.rounds,
                server_name=name,
                server_namespace=None,
                cpus_per_worker=1,
                seed=0,
            )
            train = TrainConfig(
                num_workers=workers,
                cpus_per_worker=1,
                rounds=opts.rounds,
                rays_per_task=opts.rays_per_task,
                max_failures=0,
            )
            started = time.perf_counter()
            _, history = meta_train_distributed(
                job, train, theta0, cfg.meta.outer_lr, cfg.meta.grad_clip, name, str(work / "runs")
            )
            run = {**summarize(history), "wall_s": round(time.perf_counter() - started, 1)}
            best = results.get(f"workers_{workers}")
            if best is None or run["rounds_per_s"] > best["rounds_per_s"]:
                results[f"workers_{workers}"] = run
    finally:
        ray.shutdown()
        if not opts.workdir:
            shutil.rmtree(work, ignore_errors=True)

    one, two = results["workers_1"], results["workers_2"]
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads_per_worker": 1,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "setup": {
            "meta_blocks": len(blocks),
            "rays_per_task": opts.rays_per_task,
            "rounds_measured": opts.rounds - 1,
            "repeats": opts.repeats,
            "inner_steps": cfg.meta.inner_steps,
            "field": f"{cfg.field.mlp.kind} {cfg.field.mlp.depth}x{cfg.field.mlp.width}, "
            f"{cfg.field.num_samples} samples/ray",
        },
        **results,
        "scaling_ratio": round(two["rounds_per_s"] / one["rounds_per_s"], 3),
        "compute_scaling": round(one["compute_s"] / two["compute_s"], 3),
        "actor_fraction": round((two["pull_s"] + two["push_s"]) / two["round_s"], 4),
        "barrier_fraction": round(two["wait_s"] / two["round_s"], 4),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
