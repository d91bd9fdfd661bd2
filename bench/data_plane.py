"""Data-plane benchmark: streaming speed vs a raw Parquet read, and memory flatness in scene size.

Prints ONE JSON line:
    machine             platform, cpus, torch threads, library versions
    raw_rays_per_s      ``pyarrow.parquet.read_table`` of one block's files (no shuffle, no torch)
    stream_rays_per_s   ``stream_block_rays`` of the same block: shuffled 4096-ray torch batches
    stream_vs_raw_ratio stream / raw (target >= 0.5)
    cpu_ns_per_ray      CPU time per ray (all threads) of each: robust to other load on the machine
    peak_rss_mb         peak RSS of a fresh process streaming a small and a large store
    rss_growth          large / small peak RSS (target < 1.3: memory flat in scene size)
    rss_baseline_mb     RSS of that process after imports, before streaming (small store)

Both read the same columns; the stream also shuffles and converts dtypes. The stores hold random
rays written straight to Parquet (rendering 20M pixels would only time the renderer), each shard's
rows pre-shuffled as ingest writes them. Timings are the best of several interleaved repeats: this
machine is shared.

    python bench/data_plane.py [--small 2000000] [--large 20000000] [--workdir DIR]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import torch

from mclnf_dist.raystore.store import load_manifest, write_store
from mclnf_dist.raystore.stream import stream_block_rays
from mclnf_dist.scenes.partition import BlockPartition

BATCH = 4096


def random_shards(total: int, per_shard: int, seed: int = 0):
    """``(block 0, columns)`` pairs of random rays, ``per_shard`` at a time (bounded memory)."""
    rng = np.random.default_rng(seed)
    for image, start in enumerate(range(0, total, per_shard)):
        n = min(per_shard, total - start)
        yield (
            0,
            {
                "origin": rng.random((n, 3), dtype=np.float32),
                "direction": rng.random((n, 3), dtype=np.float32),
                "rgb": rng.integers(0, 256, (n, 3), dtype=np.uint8),
                "image_id": np.full(n, image, dtype=np.int32),
                "pixel": np.arange(n, dtype=np.int32),
                "time": np.zeros(n, dtype=np.float32),
                "near": np.full(n, 0.1, dtype=np.float32),
                "far": np.full(n, 100.0, dtype=np.float32),
            },
        )


def make_store(uri: str, rays: int) -> str:
    """A one-block store of ``rays`` random rays in shards of 256k (like 8-frame ingest chunks)."""
    current = Path(uri, "manifest.json").exists() and load_manifest(uri).options.get("shuffle_rows")
    if not current:  # missing, or its rows are not shuffled at write (the bench measures that)
        part = BlockPartition.from_cameras(np.zeros((1, 3)), 1, 1)
        write_store(uri, part, random_shards(rays, 262144))
    return uri


def timed(run) -> tuple[float, float]:
    """(rays/s of wall time, CPU ns per ray over all threads) of ``run() -> rays``."""
    wall, cpu = time.perf_counter(), time.process_time()
    rays = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return rays / wall, cpu * 1e9 / rays


def time_raw(uri: str) -> tuple[float, float]:
    """``pq.read_table`` over the block's files (pyarrow's own threads)."""
    files = [os.path.join(uri, s["file"]) for s in load_manifest(uri).block_shards(0)]
    return timed(lambda: pq.read_table(files).num_rows)


def time_stream(uri: str, seed: int) -> tuple[float, float]:
    """One shuffled epoch of 4096-ray torch batches (touching each batch)."""
    return timed(lambda: sum(len(b["origin"]) for b in stream_block_rays(uri, 0, seed=seed)))


def memory_kb(field: str) -> int | None:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in kB from /proc (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_child(uri: str) -> None:
    """(fresh process) stream the whole block once; print peak RSS in MB and rays/s.

    Peak = ``ru_maxrss``, except on Linux where a forked child's ``ru_maxrss`` starts at its
    parent's RSS (the benchmark parent holds ~1 GB by then), so the child's own high-water mark
    ``VmHWM`` (reset by exec) is used.
    """
    baseline_kb = memory_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rays_per_s, _ = time_stream(uri, seed=0)
    peak_kb = memory_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"peak_rss_mb": peak_kb / 1024, "baseline_mb": baseline_kb / 1024}
    print(json.dumps({**result, "rays_per_s": rays_per_s}))


def peak_rss(uri: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", uri], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=2_000_000, help="rays of the small store")
    parser.add_argument("--large", type=int, default=20_000_000, help="rays of the large store")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--workdir", help="where stores go (default: a temporary folder)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    with tempfile.TemporaryDirectory(prefix="mclnf-bench-") as scratch:
        work = args.workdir or scratch
        started = time.perf_counter()
        small = make_store(os.path.join(work, f"rays-{args.small}"), args.small)
        large = make_store(os.path.join(work, f"rays-{args.large}"), args.large)
        write_s = time.perf_counter() - started
        raw, stream = [], []
        time_stream(small, seed=99)  # warm the page cache and imports
        for repeat in range(args.repeats):
            raw.append(time_raw(small))
            stream.append(time_stream(small, seed=repeat))
        small_rss, large_rss = peak_rss(small), peak_rss(large)
    result = {
        "bench": "data_plane",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "pyarrow": pyarrow.__version__,
        },
        "small_rays": args.small,
        "large_rays": args.large,
        "batch_size": BATCH,
        "write_seconds": round(write_s, 1),
        "raw_rays_per_s": round(max(r[0] for r in raw)),
        "stream_rays_per_s": round(max(s[0] for s in stream)),
        "stream_vs_raw_ratio": round(max(s[0] for s in stream) / max(r[0] for r in raw), 3),
        "cpu_ns_per_ray": {
            "raw": round(min(r[1] for r in raw), 1),
            "stream": round(min(s[1] for s in stream), 1),
        },
        "stream_large_rays_per_s": round(large_rss["rays_per_s"]),
        "peak_rss_mb": {
            "small": round(small_rss["peak_rss_mb"], 1),
            "large": round(large_rss["peak_rss_mb"], 1),
        },
        "rss_growth": round(large_rss["peak_rss_mb"] / small_rss["peak_rss_mb"], 3),
        "rss_baseline_mb": round(small_rss["baseline_mb"], 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
