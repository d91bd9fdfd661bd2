"""The signals experiment's config, which :mod:`mclnf_dist.experiments.recipes` builds and the
signals job, the sweeps and the report read.

The defaults are the ``image`` recipe; ``audio`` and ``video`` (and every ``-quick``/``-tiny``
budget) are complete configs in :mod:`mclnf_dist.experiments.recipes`.
"""

from dataclasses import dataclass
from dataclasses import field as default
from typing import Annotated

import torch

from mclnf_dist.config import NonNegativeInt, PositiveInt, Range, check_config
from mclnf_dist.config_rules import cross_field_rule
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.experiment_config import ExperimentConfig
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import meta_problem
from mclnf_dist.meta.methods import MethodSpec, distinct_methods
from mclnf_dist.run_settings import RunField, run_settings
from mclnf_dist.signals.loading import (
    Modality,
    default_source,
    load_signal_set,
    split_by_source,
)
from mclnf_dist.signals.signal_set import SignalSet

LoaderInt = Annotated[int, Range(ge=1, special=((0, "the loader's default"),))]
"""A loader option; 0 leaves it to the loader (so one config serves every source)."""


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
    """Held-out signals for evaluation; they share no source (file, photo) with training ones."""
    split_seed: NonNegativeInt = 0
    """Seed of the train/test split, apart from ``run.seed`` so every seed of a comparison is
    evaluated on the same held-out signals (``run.seed`` varies init, meta-training, sampling)."""
    size: tuple[LoaderInt, LoaderInt] = (0, 0)
    """(height, width) of images, photo tiles and video frames; (0, 0): the loader's default."""
    scale: LoaderInt = 0
    """Photos (``builtin:photos``): downscale factor before tiling; 0: the loader's default."""
    tiles_per_photo: LoaderInt = 0
    """Photos: at most this many tiles of each photo, evenly spaced; 0: the loader's default."""
    sample_rate: LoaderInt = 0
    """Audio: every file is resampled to this rate (Hz); 0: the loader's default."""
    length: LoaderInt = 0
    """Audio: samples per window; 0: the loader's default."""
    hop: LoaderInt = 0
    """Audio: stride between windows in samples (< length: windows of a file overlap); 0: the
    loader's default."""
    clips: LoaderInt = 0
    """Video: clips per video file, evenly spaced; 0: the loader's default."""


@dataclass
class SignalsConfig(ExperimentConfig):
    """The signals experiment: the shared experiment settings, the data and the architecture."""

    fim: FimConfig = default(default_factory=FimConfig)
    """MSE (``fim_lambda`` 0): in the ``image`` FIM study (``tune_spaces/fim_image.yaml``,
    ``docs/results/fim_sweep``) no ``fim_lambda`` in 0.25..4 beat MSE on validation faces."""
    run: RunField = run_settings("mclnf-signals")
    """Seed, device, MLflow tracking, log detail (flags without prefix: ``--seed``...)."""
    data: DataConfig = default(default_factory=DataConfig)
    field: FieldConfig = default(default_factory=FieldConfig)
    output_dir: str = "outputs/signals"
    """Results go to ``<output_dir>/<modality>/``."""


@cross_field_rule(DataConfig)
def size_given_whole(data: DataConfig, prefix: str) -> str | None:
    if (data.size[0] == 0) == (data.size[1] == 0):
        return None
    return (
        f"{prefix}size={tuple(data.size)}: expected both height and width >= 1, or (0, 0) for "
        "the loader's default"
    )


@cross_field_rule(SignalsConfig)
def signals_job_agrees(cfg: SignalsConfig, prefix: str) -> str | None:
    """OML's head and Reptile's FIM weights fit (:func:`meta_problem`)."""
    return meta_problem(cfg.meta, cfg.fim, cfg.field.depth, cfg.methods, prefix)


def loader_options(data: DataConfig) -> dict[str, object]:
    """The loader keyword arguments the config sets (its nonzero options), for
    :func:`~mclnf_dist.signals.loading.load_signal_set`; a loader that lacks one of them stops the
    job with one line naming it."""
    if (data.size[0] == 0) != (data.size[1] == 0):
        raise MclnfError(
            f"data.size={tuple(data.size)}: expected both height and width >= 1, or (0, 0) for "
            "the loader's default"
        )
    options: dict[str, object] = {"size": tuple(data.size)} if data.size[0] else {}
    for name in ("scale", "tiles_per_photo", "sample_rate", "length", "hop", "clips"):
        if getattr(data, name):
            options[name] = getattr(data, name)
    return options


def load_data(cfg: SignalsConfig, device: torch.device) -> tuple[SignalSet, SignalSet]:
    """The modality's signals, split into meta-training and held-out ones that share no source,
    on ``device``; the split follows ``data.split_seed`` only, so every run seed sees it."""
    data = cfg.data
    signals = load_signal_set(data.modality, data_source(cfg), **loader_options(data))
    train, test = split_by_source(signals, data.num_train, data.num_test, data.split_seed)
    return train.to(device), test.to(device)


def data_source(cfg: SignalsConfig) -> str:
    """The configured source, or the modality's built-in real data when it is empty."""
    return cfg.data.source or default_source(cfg.data.modality)


def validate(cfg: SignalsConfig) -> list[MethodSpec]:
    """The config's checks (configs built in code skip the command line's) and its methods."""
    check_config(cfg)
    specs, twins = distinct_methods(cfg.methods, cfg.fim.fim_lambda)
    for name, twin in twins.items():
        print(f"{name} is {twin} with --fim.fim-lambda 0: not run (its comparison is not tested)")
    return specs
