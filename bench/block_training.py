"""Block-training benchmark: a block's rays streamed vs held in memory, and memory flatness.

Prints ONE JSON line:
    machine                platform, cpus, torch threads, device
    train_rays_per_s       block training (``train_block``) fed by the ray store's stream
    preloaded_rays_per_s   the same training, the block's rays preloaded into memory
    stream_vs_preloaded    train / preloaded (target >= 0.9: streaming costs no training speed)
    peak_rss_mb            peak RSS of a fresh process training on a small and a large block
    rss_growth             large / small (target < 1.2: memory flat in the block's size)

Same field, batch, steps and optimiser for both; timings are the best of interleaved repeats
(this machine is shared). The stores hold random rays written straight to Parquet (as in
``bench/data_plane.py``), one block each; block training needs no Ray.

    python bench/block_training.py [--small 5000000] [--large 50000000] [--steps 40]
        [--batch 4096] [--device auto] [--workdir DIR]
"""

import argparse
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


def make_task(uri: str, root: str, steps: int, batch: int) -> BlockTask:
    field = RadianceFieldConfig(num_samples=32, scene_box=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
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


def rss_child(uri: str, steps: int, batch: int, device: str) -> None:
    """(fresh process) train on the block; print peak RSS in MB."""
    with tempfile.TemporaryDirectory() as root:
        train_block(make_task(uri, root, steps, batch), pick_device(device))
    print(json.dumps({"peak_rss_mb": (memory_kb("VmHWM") or 0) / 1024}))


def peak_rss(uri: str, steps: int, batch: int, device: str) -> float:
    cmd = [sys.executable, __file__, "--rss-child", uri, "--steps", str(steps)]
    cmd += ["--batch", str(batch), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=5_000_000, help="rays of the small block")
    parser.add_argument("--large", type=int, default=50_000_000, help="rays of the large block")
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    parser.add_argument("--batch", type=int, default=4096, help="rays per step")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats, best kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", help="where stores go (default: a temporary folder)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.steps, args.batch, args.device)
        return
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="mclnf-bench-") as scratch:
        work = args.workdir or scratch
        started = time.perf_counter()
        small = make_store(os.path.join(work, f"rays-{args.small}"), args.small)
        large = make_store(os.path.join(work, f"rays-{args.large}"), args.large)
        write_s = time.perf_counter() - started
        task = make_task(small, work, args.steps, args.batch)
        preloaded = preloaded_batches(small, args.batch)
        rays_per_s(task, device)  # warm-up: page cache, kernels
        streamed, held = [], []
        for _ in range(args.repeats):
            streamed.append(rays_per_s(task, device))
            held.append(rays_per_s(task, device, preloaded))
        del preloaded
        small_rss = peak_rss(small, args.steps, args.batch, args.device)
        large_rss = peak_rss(large, args.steps, args.batch, args.device)
    result = {
        "bench": "block_training",
        "machine": {**machine(), "device": str(device)},
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
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    np.random.seed(0)


if __name__ == "__main__":
    main()
