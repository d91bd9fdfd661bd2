"""Shared helpers of the benchmarks: machine description and interleaved, noise-robust timing."""

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compare(fns: dict[str, Callable[[], object]], reps: int = 15, warmup: int = 3) -> dict:
    """Median seconds of each function, measured interleaved (A B A B ...) so that machine noise
    hits every contender alike; ratios come from one run on one machine."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}
