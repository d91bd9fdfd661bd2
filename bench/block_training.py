"""Block-training benchmark: a block's rays streamed vs held in memory, and memory flatness.

Prints ONE JSON line:
    machine                platform, cpus, torch threads, device
    train_rays_per_s       block training (``train_block``) fed by the ray store's stream
    preloaded_rays_per_s   the same training, the block's rays preloaded into memory
    stream_vs_preloaded    train / preloaded (target >= 0.9: streaming costs no training speed)
    peak_rss_mb            peak RSS of a fresh process training on a small and a large block
    rss_growth             large / small (target < 1.2: memory flat in the block's size)
    scene_probe            with ``--scene``: the block field trained on a real capture (one
                           block, ingested here) for ``--scene-steps``: rays/s, seconds and the
                           held-out probe PSNR curve

Same field, batch, steps and optimiser for both; timings are the best of interleaved repeats
(this machine is shared). The stores hold random rays written straight to Parquet (as in
``bench/data_plane.py``), one block each; block training needs no Ray.

    python bench/block_training.py [--field mlp|hash_grid] [--small 5000000]
        [--large 50000000] [--steps 40] [--batch 4096] [--device auto] [--workdir DIR]
        [--scene ../shared/scenes/fox --downscale 8 --scene-steps 300]
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from data_plane import make_store, memory_kb  # noqa: E402

from mclnf_dist.device import pick_device  # noqa: E402
from mclnf_dist.distributed.block_training import (  # noqa: E402
    COLUMNS,
    BlockTask,
    BlockTrainingConfig,
    train_block,
)
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params  # noqa: E402
from mclnf_dist.raystore.stream import read_block_rays  # noqa: E402
from mclnf_dist.runtime import ensure_ray  # noqa: E402


def make_task(uri: str, root: str, steps: int, batch: int, kind: str = "mlp") -> BlockTask:
    box = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    field = RadianceFieldConfig(kind=kind, num_samples=32, scene_box=box)
    cfg = BlockTrainingConfig(
        steps=steps, batch_rays=batch, checkpoint_every=10**9, probe_rays=256, curve_points=0
    )
    init = init_radiance_params(field, 1, torch.Generator().manual_seed(0))
    return BlockTask(0, "bench", init, field, uri, uri, cfg, root, seed=0)


def preloaded_batches(uri: str, batch: int, seed: int = 0):
    """Random batches of the block's rays, all held in memory (the baseline)."""
    rays = read_block_rays(uri, 0, COLUMNS)
    generator = torch.Generator().manual_seed(seed)
    count = rays["origin"].shape[0]
    while True:
        pick = torch.randint(0, count, (batch,), generator=generator)
        yield {k: v[pick] for k, v in rays.items()}


def rays_per_s(task: BlockTask, device: torch.device, batches=None) -> float:
    with tempfile.TemporaryDirectory() as root:  # no checkpoint to resume from
        task.checkpoint_root = root
        result = train_block(task, device, batches)
    return task.cfg.steps * task.cfg.batch_rays / result.seconds


def scene_probe(args: argparse.Namespace, work: str, device: torch.device) -> dict:
    """Train the block field on a real capture (one block) and report speed and probe PSNR."""
    import ray

    from mclnf_dist.city.data import CityDataConfig, prepare_city
    from mclnf_dist.nerf.field import field_for_scene
    from mclnf_dist.progress import ProgressLog

    data = CityDataConfig(scene=args.scene, work_dir=os.path.join(work, "scene"),
                          blocks_x=1, blocks_y=1, downscale=args.downscale,
                          skip_missing_images=True)  # fmt: skip
    ensure_ray()
    try:
        city = prepare_city(data, ProgressLog("bench"), unbounded=args.contraction)
    finally:
        ray.shutdown()
    field = field_for_scene(city.load_scene("all"), kind=args.field, num_samples=args.samples,
                            contraction=args.contraction)  # fmt: skip
    if args.proposal_samples:
        proposal = dataclasses.replace(field.grid.proposal, samples=args.proposal_samples)
        field.grid = dataclasses.replace(field.grid, proposal=proposal)
    cfg = BlockTrainingConfig(steps=args.scene_steps, batch_rays=args.batch, lr=args.lr,
                              checkpoint_every=10**9, curve_points=4)  # fmt: skip
    init = init_radiance_params(field, 1, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as root:
        task = BlockTask(city.block_order[0], "bench", init, field, city.train_uri,
                         city.test_uri, cfg, root, seed=0)  # fmt: skip
        result = train_block(task, device)
    return {
        "scene": args.scene,
        "contraction": args.contraction,
        "downscale": args.downscale,
        "steps": args.scene_steps,
        "samples": args.samples,
        "proposal_samples": args.proposal_samples,
        "lr": args.lr,
        "seconds": round(result.seconds, 1),
        "rays_per_s": round(args.scene_steps * args.batch / result.seconds),
        "probe_psnr": {str(k): round(v, 2) for k, v in sorted(result.curve.items())},
    }


def rss_child(uri: str, steps: int, batch: int, device: str, kind: str = "mlp") -> None:
    """(fresh process) train on the block; print peak RSS in MB."""
    with tempfile.TemporaryDirectory() as root:
        train_block(make_task(uri, root, steps, batch, kind), pick_device(device))
    print(json.dumps({"peak_rss_mb": (memory_kb("VmHWM") or 0) / 1024}))


def peak_rss(uri: str, steps: int, batch: int, device: str, kind: str = "mlp") -> float:
    cmd = [sys.executable, __file__, "--rss-child", uri, "--steps", str(steps)]
    cmd += ["--batch", str(batch), "--device", device, "--field", kind]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def store_measurements(args: argparse.Namespace, work: str, device: torch.device) -> dict:
    """Streamed vs preloaded training speed and peak memory on random-ray stores."""
    started = time.perf_counter()
    small = make_store(os.path.join(work, f"rays-{args.small}"), args.small)
    large = make_store(os.path.join(work, f"rays-{args.large}"), args.large)
    write_s = time.perf_counter() - started
    task = make_task(small, work, args.steps, args.batch, args.field)
    preloaded = preloaded_batches(small, args.batch)
    rays_per_s(task, device)  # warm-up: page cache, kernels
    streamed, held = [], []
    for _ in range(args.repeats):
        streamed.append(rays_per_s(task, device))
        held.append(rays_per_s(task, device, preloaded))
    del preloaded
    small_rss = peak_rss(small, args.steps, args.batch, args.device, args.field)
    large_rss = peak_rss(large, args.steps, args.batch, args.device, args.field)
    return {
        "small_rays": args.small,
        "large_rays": args.large,
        "steps": args.steps,
        "batch_rays": args.batch,
        "samples_per_ray": task.field.num_samples,
        "write_seconds": round(write_s, 1),
        "train_rays_per_s": round(max(streamed)),
        "preloaded_rays_per_s": round(max(held)),
        "stream_vs_preloaded": round(max(streamed) / max(held), 3),
        "peak_rss_mb": {"small": round(small_rss, 1), "large": round(large_rss, 1)},
        "rss_growth": round(large_rss / small_rss, 3),
        "all_runs_rays_per_s": {
            "train": [round(v) for v in streamed],
            "preloaded": [round(v) for v in held],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=5_000_000, help="rays of the small block")
    parser.add_argument("--large", type=int, default=50_000_000, help="rays of the large block")
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    parser.add_argument("--batch", type=int, default=4096, help="rays per step")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats, best kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--field", default="mlp", choices=["mlp", "hash_grid"], help="block field")
    parser.add_argument("--scene", help="a real capture to report the probe PSNR on (one block)")
    parser.add_argument("--downscale", type=int, default=8, help="of --scene's images")
    parser.add_argument("--scene-steps", type=int, default=300, help="steps on --scene")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam rate on --scene")
    parser.add_argument("--contraction", action="store_true", help="unbounded --scene")
    parser.add_argument("--samples", type=int, default=32, help="field samples per ray")
    parser.add_argument(
        "--proposal-samples",
        type=int,
        default=0,
        help="hash_grid: proposal samples per ray (0: stratified samples only)",
    )
    parser.add_argument("--skip-stores", action="store_true", help="only --scene's measurement")
    parser.add_argument("--workdir", help="where stores go (default: a temporary folder)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.steps, args.batch, args.device, args.field)
        return
    device = pick_device(args.device)
    started = time.perf_counter()
    result = {"bench": "block_training", "machine": {**machine(), "device": str(device)}}
    result["field"] = args.field
    with tempfile.TemporaryDirectory(prefix="mclnf-bench-") as scratch:
        work = args.workdir or scratch
        if not args.skip_stores:
            result.update(store_measurements(args, work, device))
        if args.scene:
            result["scene_probe"] = scene_probe(args, work, device)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    np.random.seed(0)


if __name__ == "__main__":
    main()
