"""What every job shares about *how* it runs (seed, device, MLflow, log detail), as one config.

Nested in each job's config as ``run`` (YAML ``run: {seed: 3}``); on the command line its flags
have no prefix (``--seed 3 --device cpu --tracking-uri ... --experiment ... --verbose``).
"""

from dataclasses import dataclass, field
from typing import Annotated, Any

import tyro

from mclnf_dist.config import NonNegativeInt
from mclnf_dist.device import Device


@dataclass
class RunSettings:
    """Seed, device, MLflow tracking and log detail of a run."""

    seed: NonNegativeInt = 0
    """Seed of every random draw of the run (data split, inits, episodes)."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    tracking_uri: str = ""
    """MLflow tracking URI; empty: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db."""
    experiment: str = "mclnf"
    """MLflow experiment name (each job's config has its own default: ``mclnf-city``, ...)."""
    verbose: bool = False
    """Show Ray's and Ray Train's own per-round logs."""


def run_settings(experiment: str) -> Any:
    """A ``run`` field of a job config whose MLflow experiment defaults to ``experiment``."""
    return field(default_factory=lambda: RunSettings(experiment=experiment))


RunField = Annotated[RunSettings, tyro.conf.OmitArgPrefixes]
"""The type of a job's ``run`` field: its flags are ``--seed``, not ``--run.seed``."""
