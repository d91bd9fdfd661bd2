"""The city experiment's config, which :mod:`mclnf_dist.experiments.recipes` builds and the city
job, the sweeps and the benches read. The defaults are the ``city-demo`` recipe."""

from dataclasses import dataclass
from dataclasses import field as default

from mclnf_dist.city.data import CityDataConfig, blocks_problem
from mclnf_dist.config import NonNegativeInt
from mclnf_dist.config_rules import cross_field_rule, name_problem
from mclnf_dist.distributed.train_config import BlockTrainingConfig, TrainConfig
from mclnf_dist.experiments.experiment_config import ExperimentConfig
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig, meta_problem
from mclnf_dist.meta.methods import METHODS, MethodName
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.run_settings import RunField, run_settings


def default_field() -> RadianceFieldConfig:
    mlp = FieldConfig(kind="relu_pe", depth=4, width=64, pe_frequencies=8, output_offset=0.0)
    return RadianceFieldConfig(mlp=mlp, num_samples=32)


@dataclass
class CityExperimentConfig(ExperimentConfig):
    """The city job: the shared experiment settings, the city's data and field, its distributed
    meta-training and block training, and its run."""

    meta: MetaConfig = default(
        default_factory=lambda: MetaConfig(inner_steps=2, inner_lr=1.0, outer_lr=1e-2)
    )
    """The outer rate and the meta budget were chosen on the demo city's validation views
    (``docs/results/defaults/city.md``)."""
    fim: FimConfig = default(default_factory=lambda: FimConfig(fim_lambda=0.0))
    """MSE (so ``mim`` shares ``mod``'s meta-training): the city's FIM study on validation pixels
    (``tune_spaces/fim_city.yaml``, ``docs/results/fim_sweep/city.csv``) found no better setting."""
    adapt: AdaptConfig = default(
        default_factory=lambda: AdaptConfig(
            max_steps=64, batch_size=2048, adam_lr=1e-2, sgd_steps=2, ewc_lambda=0.1
        )
    )
    """The one plan of every method (2 SGD steps at the inner-loop rate, then Adam at 1e-2) and
    EWC's weight, chosen on validation pixels of the training views by ``mclnf choose-plan``
    (``docs/results/plans/city-demo.json``, ``city-demo-ewc.json``)."""
    methods: tuple[MethodName, ...] = ("random", "mod-random", "maml", "mod", "mim")
    """Methods compared in the continual phase."""
    run: RunField = run_settings("mclnf-city")
    """Seed, device, MLflow tracking, log detail (flags without prefix: ``--seed``...)."""
    data: CityDataConfig = default(default_factory=CityDataConfig)
    field: RadianceFieldConfig = default(default_factory=default_field)
    train: TrainConfig = default(default_factory=TrainConfig)
    block: BlockTrainingConfig = default(default_factory=BlockTrainingConfig)
    run_name: str = "city-demo"
    """Names the run: each run writes into its own ``runs/<name>/<id>`` folder; re-running the
    same name continues that name's latest interrupted run."""
    fresh: bool = False
    """Start a new run even when the latest run of this name was interrupted."""
    storage_uri: str = ""
    """Checkpoints (local path or ``s3://``); empty: ``<work_dir>/runs``."""
    score_views: NonNegativeInt = 0
    """Held-out views rendered and scored at every checkpoint of the continual phase, evenly
    spaced over the held-out split (0: all of them). The city model's final scores always use
    every held-out view."""
    render_views: NonNegativeInt = 3
    """Held-out views rendered through the routed modules (PNG)."""
    extend: str = ""
    """A saved city model (``<city_model folder>/<name>``) to extend with ``--data.scene``'s new
    captures: only their new blocks are trained (from the model's ``theta_0``), the model's own
    blocks stay bit-identical. Empty: a full run."""


@cross_field_rule(CityExperimentConfig)
def city_job_agrees(cfg: CityExperimentConfig, prefix: str) -> str | None:
    """The run name is a folder name; block ids exist in the grid the job cuts (an extension's
    partition is the model's, known only once it is read); OML's head and Reptile's FIM weights
    fit (:func:`meta_problem`); every meta-training worker gets a meta block."""
    if problem := name_problem(f"{prefix}run_name", cfg.run_name):
        return problem
    if not cfg.extend and (problem := blocks_problem(cfg.data, f"{prefix}data.")):
        return problem
    if problem := meta_problem(cfg.meta, cfg.fim, cfg.field.linear_layers, cfg.methods, prefix):
        return problem
    meta_learned = any(METHODS[m].meta_learned for m in cfg.methods)
    workers, blocks = max(1, cfg.train.num_workers), len(cfg.data.meta_blocks)
    if meta_learned and not cfg.extend and blocks and workers > blocks:
        return (
            f"{prefix}train.num_workers={cfg.train.num_workers} is more than the {blocks} "
            f"{prefix}data.meta_blocks {list(cfg.data.meta_blocks)} (expected at most one worker "
            "per meta-training block)"
        )
    return None
