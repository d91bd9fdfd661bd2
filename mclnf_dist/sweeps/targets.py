"""What a sweep trial meta-trains and validates on, per pipeline: the city or the signals.

A pipeline's data are prepared ONCE, in the driver (:meth:`Pipeline.prepare`: the demo city
generated and ingested, signals loaded and split), and shipped to every trial. Inside a trial,
:meth:`prepared.task(cfg, device) <CityPrepared.task>` gives a :class:`MetaTask` for the trial's
config, on the trial's device: the field, the random initialisation, the next meta-training
episode, and a validation score of a ``theta_0``. Validation data are never meta-trained on:

* city: meta-training uses the rays of ``city.meta_blocks`` that cross no other block (a ray is
  stored in every block it crosses); validation adapts fresh modules to the *held-out blocks* on
  training-view rays and scores them on OTHER pixels of the training views (the held-out views
  are the city job's test images and are never looked at);
* signals: the pipeline's own train/test split is made first (the test signals stay untouched),
  then a fifth of the training signals (:data:`VALIDATION_FRACTION`) is held back for validation.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mclnf_dist.city.data import (
    CityData,
    blocks_as_segments,
    city_field,
    drawn_pixels,
    field_for_capture,
    prepare_city,
)
from mclnf_dist.distributed.block_episodes import BlockRayEpisodes, worker_seed
from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.protocol import MethodContext, MethodResult, evaluate_method
from mclnf_dist.experiments.city_config import CityExperimentConfig
from mclnf_dist.experiments.experiment_config import ExperimentConfig
from mclnf_dist.experiments.signals_config import SignalsConfig, load_data, validate
from mclnf_dist.fields.stacked_mlp import FieldConfig, Params, init_params
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.methods import InitKey, MethodSpec, get_method, init_key
from mclnf_dist.meta.outer_loop import EpisodeSource, SignalEpisodes
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params
from mclnf_dist.progress import ProgressLog
from mclnf_dist.runtime import ensure_ray
from mclnf_dist.scenes.scene import Scene, check_scene, reading_once, scene_options
from mclnf_dist.signals.signal_set import SignalSet

VALIDATION_FRACTION = 0.2
"""Signals: share of the training signals held back to validate trials on (at least one)."""


def trial_method(cfg: ExperimentConfig) -> MethodSpec:
    """``mim`` (FIM loss in the inner loop and at adaptation) when ``fim_lambda > 0``, else ``mod``
    (``fim_lambda = 0`` is exactly the MSE loss, so this only skips the Fisher's cost)."""
    return get_method("mim" if cfg.fim.fim_lambda > 0 else "mod")


class MetaTask:
    """One trial's view of the data, on the trial's device: episodes to meta-train on, a
    validation set to score on. Random draws come from a CPU generator (the same episodes on any
    device)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        field: FieldConfig | RadianceFieldConfig,
        fit: SignalSet,
        score: SignalSet,
        device: torch.device,
        spec: MethodSpec | None = None,
    ) -> None:
        self.cfg, self.field, self.device = cfg, field, device
        self.fit, self.score = fit.to(device), score.to(device)
        self.spec = spec or trial_method(cfg)
        """The method whose meta-training the episodes serve (a trial's: :func:`trial_method`)."""
        self.fim: FimConfig | None = cfg.fim if self.spec.fim else None
        self.seed = cfg.run.seed
        """Seeds the global torch generator (the radiance field's sample jitter)."""

    def init(self) -> Params:
        raise NotImplementedError

    blocks_are_tasks = False
    """A city's tasks are its blocks (``maml`` then shares ``mod``'s init, as in the city job)."""

    def init_key(self) -> InitKey:
        """Which initialisation the method starts from (:func:`~mclnf_dist.meta.methods.init_key`;
        methods with the same key share one ``theta_0``)."""
        return init_key(self.spec, self.cfg.fim.fim_lambda, self.blocks_are_tasks)

    def episodes(self, generator: torch.Generator, start_round: int) -> EpisodeSource:
        """The meta-training episodes, from round ``start_round`` on (a resumed trial)."""
        raise NotImplementedError

    def validate(self, theta0: Params, adapt_step: int) -> MethodResult:
        """Adapt fresh modules from ``theta0`` for ``adapt_step`` steps on the validation data
        (curve at steps 1, 2, 4, ..., ``adapt_step``)."""
        adapt = dataclasses.replace(self.cfg.adapt, max_steps=adapt_step)
        ctx = MethodContext(
            self.spec,
            self.field,
            theta0,
            self.cfg.meta,
            self.cfg.fim,
            adapt,
            seed=self.cfg.run.seed + 1,
        )  # validation's own streams: how often it runs leaves meta-training alone
        return evaluate_method(ctx, self.fit, None, self.score)


# ----------------------------------------------------------------------------------------- city


def validation_rays(cfg: CityExperimentConfig, city: CityData, blocks: list[int]) -> SignalSet:
    """What a city trial or plan is validated on, never a test view and never a fitted pixel:
    the scene's own validation views when it has them (the generated city's ``val`` split),
    else other pixels of the training views, none of which any block's fit draw holds (a ray is
    stored in every block it crosses, so "other rays of this block" is not enough)."""
    n = cfg.data.score_rays_per_block
    if city.val_uri is not None:
        return blocks_as_segments(city.val_uri, blocks, n, cfg.run.seed, "validation views")
    fitted = drawn_pixels(city.train_uri, blocks, cfg.data.fit_rays_per_block, cfg.run.seed)
    skip = cfg.data.fit_rays_per_block
    return blocks_as_segments(
        city.train_uri, blocks, n, cfg.run.seed, "validation pixels", skip=skip, exclude=fitted
    )


class CityTask(MetaTask):
    """Meta-train on the meta blocks' rays streamed exactly as the city job's one worker would
    (:class:`BlockRayEpisodes`, rank 0 of 1), validate on the held-out blocks."""

    blocks_are_tasks = True

    def __init__(
        self,
        cfg: CityExperimentConfig,
        prepared: "CityPrepared",
        device: torch.device,
        spec: MethodSpec | None = None,
    ) -> None:

        city = prepared.city
        given = prepared.scene if cfg.data.scene else None  # None: the generated demo city
        field = city_field(field_for_capture(cfg.field, given), prepared.scene)
        held_out = city.held_out or city.block_order[-1:]
        fit = blocks_as_segments(
            city.train_uri, held_out, cfg.data.fit_rays_per_block, cfg.run.seed, "train views"
        )
        score = validation_rays(cfg, city, held_out)
        super().__init__(cfg, field, fit, score, device, spec)
        self.data_uri, self.meta_blocks = city.train_uri, city.meta_blocks
        self.avoid_blocks = city.non_meta_blocks
        self.seed = worker_seed(cfg.run.seed, 0)

    def init(self) -> Params:

        generator = torch.Generator().manual_seed(self.cfg.run.seed)
        return init_radiance_params(self.field, 1, generator, self.device)

    def episodes(self, generator: torch.Generator, start_round: int) -> EpisodeSource:
        schedule = self.init_key().schedule  # as the city job
        source = BlockRayEpisodes(
            self.data_uri,
            self.meta_blocks,
            self.cfg.train.rays_per_task,
            worker_seed(self.cfg.run.seed, 0),
            schedule,
            self.cfg.meta,
            self.device,
            avoid_blocks=self.avoid_blocks,
        )
        source.skip(start_round)
        return source


@dataclass
class CityPrepared:
    """The city as the driver prepared it (absolute URIs) plus the scene's box and sky."""

    city: CityData
    scene: Scene

    def task(
        self, cfg: CityExperimentConfig, device: torch.device, spec: MethodSpec | None = None
    ) -> MetaTask:
        """A trial's task (``spec``: meta-train for this method instead of the trial's)."""
        return CityTask(cfg, self, device, spec)


@reading_once()
def prepare_city_target(cfg: CityExperimentConfig, log: ProgressLog) -> CityPrepared:
    """Generate (if needed) and ingest the city once; keep what the trials need."""

    given = None
    if cfg.data.scene:
        given = check_scene(cfg.data.scene, **scene_options(cfg.data, cfg.field.scene_box))
    ensure_ray()  # the ingest runs as Ray tasks
    field = field_for_capture(cfg.field, given)
    city = prepare_city(cfg.data, log, field.scene_box, unbounded=field.contraction)
    return CityPrepared(city, city.load_scene("all"))


# -------------------------------------------------------------------------------------- signals


class SignalsTask(MetaTask):
    """Meta-train on the sweep's training signals, validate on the held-back ones."""

    def __init__(
        self,
        cfg: SignalsConfig,
        prepared: "SignalsPrepared",
        device: torch.device,
        spec: MethodSpec | None = None,
    ) -> None:
        super().__init__(cfg, cfg.field, prepared.val, prepared.val, device, spec)
        self.train = prepared.train
        self.coords = prepared.train.segment_coords().to(device)  # (T, n, d)
        self.values = prepared.train.segment_values().to(device)  # (S, T, n, C)

    def init(self) -> Params:
        generator = torch.Generator().manual_seed(self.cfg.run.seed)
        train = self.train
        return init_params(
            self.field, train.in_features, train.out_features, 1, generator, self.device
        )

    def episodes(self, generator: torch.Generator, start_round: int) -> EpisodeSource:
        """As the signals job draws them (a resumed trial restores ``generator``'s state)."""
        schedule = self.spec.meta_schedule
        return SignalEpisodes(schedule, self.cfg.meta, self.coords, self.values, generator)


@dataclass
class SignalsPrepared:
    """Meta-training and validation signals (the pipeline's test signals are left out)."""

    train: SignalSet
    val: SignalSet

    def task(
        self, cfg: SignalsConfig, device: torch.device, spec: MethodSpec | None = None
    ) -> MetaTask:
        """A trial's task (``spec``: meta-train for this method instead of the trial's)."""
        return SignalsTask(cfg, self, device, spec)


def prepare_signals_target(cfg: SignalsConfig, log: ProgressLog) -> SignalsPrepared:
    """Load the signals once; split off the test signals (as the pipeline does), then validation."""

    validate(cfg)
    train, _test = load_data(cfg, torch.device("cpu"))
    num_val = max(1, round(VALIDATION_FRACTION * train.num_signals))
    if train.num_signals - num_val < 1:
        raise MclnfError(
            f"data.num_train={train.num_signals} leaves no signal to meta-train on after "
            f"{num_val} validation signals (expected data.num_train >= 2)"
        )
    # Validation may share sources with meta-training (both are training data); the test side
    # shares none with either. Drawn from split_seed so every run seed tunes on the same signals.
    generator = torch.Generator().manual_seed(cfg.data.split_seed + 1)
    order = torch.randperm(train.num_signals, generator=generator).tolist()
    meta_train, val = train.subset(sorted(order[num_val:])), train.subset(sorted(order[:num_val]))
    log.info(
        f"{meta_train.num_signals} meta-training / {val.num_signals} validation "
        f"{cfg.data.modality} signals ({_test.num_signals} test signals left untouched)"
    )
    return SignalsPrepared(meta_train, val)


# ------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Pipeline:
    """A pipeline a sweep can target: its config class (whose recipes a space's ``base`` may name)
    and its data preparation."""

    name: str
    config_class: Callable[[], ExperimentConfig]
    prepare: Callable[[Any, ProgressLog], "CityPrepared | SignalsPrepared"]
    budget_key: ClassVar[str] = "meta.outer_steps"
    """Dotted path of the meta budget, the same in every pipeline (the trials' time axis; never
    swept)."""


def pipelines() -> dict[str, Pipeline]:
    """The registry (built on call: importing the experiments is slow)."""

    return {
        "city": Pipeline("city", CityExperimentConfig, prepare_city_target),
        "signals": Pipeline("signals", SignalsConfig, prepare_signals_target),
    }
