"""Device choice: CUDA when present, else CPU; never assumed."""

import platform
from typing import Literal

import torch

from mclnf_dist.errors import MclnfError

Device = Literal["auto", "cpu", "cuda"]
"""Where a job computes: ``auto`` picks CUDA when present, else the CPU."""


def pick_device(preference: str = "auto") -> torch.device:
    """Return the torch device to run on.

    Args:
        preference: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise MclnfError(f"device={preference!r} was requested but CUDA is not available here")
    try:
        return torch.device(preference)
    except RuntimeError as err:
        raise MclnfError(
            f"device={preference!r} is not a torch device (expected auto|cpu|cuda)"
        ) from err


def machine_info() -> dict:
    """What a result was measured on (recorded beside every report)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
