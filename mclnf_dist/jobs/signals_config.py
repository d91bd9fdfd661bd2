"""The signals job's config (apart from the job, so :mod:`mclnf_dist.recipes` can build it and
the job can read recipes without an import cycle).

The defaults are the ``image`` recipe; ``audio`` and ``video`` (and every ``-quick``/``-tiny``
budget) are complete configs in :mod:`mclnf_dist.recipes`.
"""

from dataclasses import dataclass
from dataclasses import field as default
from typing import Annotated

from mclnf_dist.config import PositiveInt, Range
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.methods import METHODS, MethodName
from mclnf_dist.run_settings import RunField, run_settings
from mclnf_dist.signals.loading import Modality


@dataclass
class DataConfig:
    """Which signals, and how many for meta-training and for evaluation."""

    modality: Modality = "image"
    """Kind of signal; the budgets for it come from its recipe (``--recipe audio``)."""
    source: str = ""
    """A folder/file path or ``builtin:<name>``; empty: the modality's built-in real data."""
    num_train: PositiveInt = 80
    """Signals for meta-training."""
    num_test: PositiveInt = 20
    """Held-out signals for evaluation."""


@dataclass
class SignalsConfig:
    """The signals experiment: data, architecture, meta-training, evaluation, tracking."""

    data: DataConfig = default(default_factory=DataConfig)
    field: FieldConfig = default(default_factory=FieldConfig)
    meta: MetaConfig = default(default_factory=MetaConfig)
    fim: FimConfig = default(default_factory=lambda: FimConfig(fim_lambda=1.0, apply_to="both"))
    """The ``image`` winner of the FIM study (``tune_spaces/fim_image.yaml``,
    ``docs/results/fim_sweep``): beat MSE by more than the seed spread on validation faces."""
    adapt: AdaptConfig = default(default_factory=AdaptConfig)
    methods: tuple[MethodName, ...] = tuple(METHODS)
    """Methods to run (all eight by default)."""
    param_match: bool = False
    """Widen the one-network methods to the modular methods' total parameter count."""
    output_dir: str = "outputs/signals"
    """Results go to ``<output_dir>/<modality>/``."""
    workers: Annotated[int, Range(ge=0, special=((-1, "auto"),))] = -1
    """Methods run as parallel Ray tasks (1 CPU each) when > 1 (0 or 1: in-process); -1 (auto):
    on CPU yes, on a GPU no."""
    run: RunField = run_settings("mclnf-signals")
    """Seed, device, MLflow tracking, log detail (flags without prefix: ``--seed``...)."""
