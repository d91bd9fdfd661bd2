"""The city job's block phase: every block trained to quality, the city model scored as rendered.

For the meta-learned ``theta_0`` (``mod``'s, the MSE meta-objective) and for a random init, with
the same budget, optimiser plan and ray stream per block: train every block's module on all its
rays (:mod:`mclnf_dist.distributed.block_training`), stack the modules into a city model, save it,
render every held-out view through it and score the full images (PSNR, SSIM, per block). The
comparison: each init's final PSNR on the held-out probe rays, and the steps each needs to reach
the other's final PSNR.
"""

from pathlib import Path

import numpy as np
import torch

from mclnf_dist.city.data import CityData
from mclnf_dist.city.model import PREVIEW_PREFIX, save_city_model
from mclnf_dist.city.outputs import scene_record
from mclnf_dist.city.results import BlockPhaseResult, InitScores
from mclnf_dist.distributed.block_episodes import worker_seed
from mclnf_dist.distributed.block_training import (
    BlockResult,
    BlockTask,
    BlockTrainingConfig,
    train_blocks,
)
from mclnf_dist.evaluation.city_images import score_city_images
from mclnf_dist.evaluation.plots import plot_step_curves
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.progress import ProgressLog
from mclnf_dist.scenes.routing import module_router, seam_margin_problem


def stack_modules(results: list[BlockResult], block_order: list[int]) -> Params:
    """One-module params of every block -> stacked params (M = blocks, in arrival order)."""
    by_block = {r.block: r.params for r in results}
    return {k: torch.cat([by_block[b][k] for b in block_order]) for k in results[0].params}


def mean_curve(results: list[BlockResult]) -> dict[int, float]:
    """Probe PSNR averaged over blocks, per step."""
    steps = sorted(set.intersection(*(set(r.curve) for r in results)))
    return {s: float(np.mean([r.curve[s] for r in results])) for s in steps}


def steps_to_reach(curve: dict[int, float], target: float) -> int | None:
    """First recorded step whose PSNR reaches ``target`` (None: never within the budget)."""
    return next((s for s in sorted(curve) if curve[s] >= target), None)


def block_phase(
    block_cfg: BlockTrainingConfig,
    inits: dict[str, Params],
    field_cfg: RadianceFieldConfig,
    city: CityData,
    checkpoint_root: str,
    out: Path,
    seed: int,
    parallel: bool,
    log: ProgressLog,
    frozen: tuple[Params, list[int]] | None = None,
) -> BlockPhaseResult:
    """Train, save and score the city model of every init in ``inits`` (``meta``, ``random``).

    Args:
        frozen: (stacked params, their blocks) of modules kept as they are (an extended city
            model's old blocks): they come first in every saved model, bit-identical.
    """
    tasks = [
        BlockTask(
            block=block,
            init_name=name,
            init={k: v.cpu() for k, v in init.items()},
            field=field_cfg,
            train_uri=city.train_uri,
            test_uri=city.test_uri,
            cfg=block_cfg,
            checkpoint_root=checkpoint_root,
            seed=worker_seed(seed, block),  # the same stream for every init
        )
        for name, init in inits.items()
        for block in city.block_order
    ]
    log.info(
        f"block training: {len(city.block_order)} blocks x {len(inits)} inits "
        f"({', '.join(inits)}), {block_cfg.steps} steps of {block_cfg.batch_rays} streamed rays"
    )
    order = (frozen[1] if frozen else []) + list(city.block_order)
    for name, init in inits.items():  # what mclnf view --watch shows while the blocks train
        count = len(city.block_order)
        params = {k: v.cpu().repeat(count, *([1] * (v.dim() - 1))) for k, v in init.items()}
        if frozen is not None:
            params = {k: torch.cat([frozen[0][k], v]) for k, v in params.items()}
        save_city_model(
            str(out / "city_model"), f"{PREVIEW_PREFIX}{name}", field_cfg, params,
            city.partition, order, True, scene_record(city),
            checkpoints=f"{checkpoint_root.rstrip('/')}/{name}",
        )  # fmt: skip
    results = train_blocks(tasks, log, parallel)
    test_scene = city.load_scene("test")
    router = module_router(city.partition, order, modular=True)
    if problem := seam_margin_problem(city.partition, field_cfg.seam_margin):
        log.info(f"warning: {problem}")
    scored: dict[str, InitScores] = {}
    curves = {}
    for name in inits:
        mine = [r for r in results if r.init_name == name]
        params = stack_modules(mine, city.block_order)
        if frozen is not None:
            params = {k: torch.cat([frozen[0][k], v]) for k, v in params.items()}
        save_city_model(
            str(out / "city_model"),
            f"blocks-{name}",
            field_cfg,
            params,
            city.partition,
            order,
            True,
            scene_record(city),
        )
        scores = score_city_images(field_cfg, params, router, city.partition, test_scene, log, name)
        curves[name] = mean_curve(mine)
        scored[name] = InitScores(
            heldout_image_psnr=scores.psnr,
            heldout_image_ssim=scores.ssim,
            per_image=scores.per_image,
            per_block_psnr=scores.per_block,
            probe_curve=curves[name],
            train_seconds=sum(r.seconds for r in mine),
        )
    reach = None
    if len(curves) == 2:
        (a, ca), (b, cb) = curves.items()
        reach = {a: steps_to_reach(ca, cb[max(cb)]), b: steps_to_reach(cb, ca[max(ca)])}
    plot_step_curves(curves, out / "block_training.png", "block training: mean over blocks")
    return BlockPhaseResult(block_cfg.steps, block_cfg.batch_rays, scored, reach)
