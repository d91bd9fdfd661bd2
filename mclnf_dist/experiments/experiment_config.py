"""What every experiment configures alike: the base of the signals and the city configs.

Meta-learning, the FIM loss, the adaptation plan, the methods compared and how they run are the
same settings in both experiments (the same flags, the same YAML keys); each experiment adds its
data and its field, and declares its own defaults where its signals differ.
"""

from dataclasses import dataclass
from dataclasses import field as default
from typing import Annotated

from mclnf_dist.config import Range
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.methods import METHODS, MethodName
from mclnf_dist.run_settings import RunField, run_settings


@dataclass
class ExperimentConfig:
    """Meta-learning, FIM loss, adaptation plan, methods and run settings of an experiment."""

    meta: MetaConfig = default(default_factory=MetaConfig)
    fim: FimConfig = default(default_factory=FimConfig)
    adapt: AdaptConfig = default(default_factory=AdaptConfig)
    methods: tuple[MethodName, ...] = tuple(METHODS)
    """Methods compared (all eight by default)."""
    param_match: bool = False
    """Widen the one-network methods (``random``, ``maml``, ...) to the modular methods' total
    parameter count (``maml`` then meta-trains its own, wider ``theta_0``)."""
    workers: Annotated[int, Range(ge=0, special=((-1, "auto"),))] = -1
    """Methods run as parallel Ray tasks (1 CPU each) when > 1 (0 or 1: in-process); -1 (auto):
    on CPU yes, on a GPU no."""
    run: RunField = run_settings("mclnf")
    """Seed, device, MLflow tracking, log detail (flags without prefix: ``--seed``...)."""
