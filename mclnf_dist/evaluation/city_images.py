"""The city model scored as users get it: full held-out images rendered through the routed modules.

Every pixel of every held-out view is rendered by the city model (each sample point evaluated by
the module of the block it falls in), clamped to [0, 1] and compared with the photo: PSNR and SSIM
per image, and PSNR per block, where a pixel belongs to the block holding its expected ray
termination point (pixels that see mostly background, opacity < 0.5, count for no block).
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity

from mclnf_dist.evaluation.protocol import Measurement, MethodContext
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.meta_learning import mse_to_psnr
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.nerf.rays import frame_rays, near_far_from_box
from mclnf_dist.nerf.render import RouteFn, render_view_outputs
from mclnf_dist.progress import ProgressLog
from mclnf_dist.scenes.partition import BlockPartition
from mclnf_dist.scenes.routing import module_router
from mclnf_dist.scenes.scene import Scene, load_frame_image


@dataclass
class CityImageScores:
    """Scores of one city model on a scene's held-out views."""

    psnr: float
    """PSNR (dB) of all held-out pixels together."""
    ssim: float
    """Mean SSIM over the images."""
    per_image: list[dict] = field(default_factory=list)
    """``{"image", "psnr", "ssim"}`` per held-out view."""
    per_block: dict[int, float] = field(default_factory=dict)
    """Block id -> PSNR (dB) of the pixels that end in that block."""
    images: list[np.ndarray] = field(default_factory=list)
    """The renders, uint8 (H, W, 3), for pictures."""


def psnr_of(squared_error_sum: float, count: int) -> float:
    return float(mse_to_psnr(squared_error_sum / max(count, 1)))


def score_city_images(
    field_cfg: RadianceFieldConfig,
    params: Params,
    route: RouteFn,
    partition: BlockPartition,
    scene: Scene,
    log: ProgressLog | None,
    label: str = "city model",
    fixed_blocks: list[np.ndarray] | None = None,
) -> CityImageScores:
    """Render every frame of ``scene`` (the held-out split) and score it; see the module doc.
    ``log``: where the rendering progress bar goes (None: no bar, e.g. at every checkpoint).
    ``fixed_blocks``: per frame, (H*W,) block of every pixel fixed in advance (the same pixels
    for every model compared, :func:`ray_midpoint_blocks`); default: where this model's rays end.
    """
    frames = scene.frames
    total = sum(f.width * f.height for f in frames)
    bar = log.bar(f"rendering {label}", total, "ray") if log is not None else None
    block_error = np.zeros(partition.num_blocks)
    block_count = np.zeros(partition.num_blocks)
    total_error, total_count = 0.0, 0
    per_image, images, ssims = [], [], []
    for index, frame in enumerate(frames):
        out = render_view_outputs(
            field_cfg, params, frame, route, scene.near, scene.far, on_chunk=bar and bar.update
        )
        prediction = out["rgb"].clamp(0.0, 1.0).cpu().numpy().astype(np.float64)
        truth = load_frame_image(scene, frame).astype(np.float64) / 255.0
        error = ((prediction - truth) ** 2).mean(axis=-1)  # (H, W)
        side = min(7, frame.height, frame.width)
        side -= 1 - side % 2  # an odd window
        ssim = structural_similarity(
            truth, prediction, data_range=1.0, channel_axis=-1, win_size=side
        )
        per_image.append({"image": index, "psnr": psnr_of(error.sum(), error.size), "ssim": ssim})
        ssims.append(ssim)
        total_error += float(error.sum())
        total_count += error.size
        images.append((prediction * 255.0).round().astype(np.uint8))
        blocks = pixel_blocks(out, partition) if fixed_blocks is None else fixed_blocks[index]
        seen = blocks >= 0
        np.add.at(block_error, blocks[seen], error.reshape(-1)[seen])
        np.add.at(block_count, blocks[seen], 1)
    if bar is not None:
        bar.close()
    per_block = {
        b: psnr_of(block_error[b], int(block_count[b]))
        for b in range(partition.num_blocks)
        if block_count[b]
    }
    psnr = psnr_of(total_error, total_count)
    return CityImageScores(psnr, float(np.mean(ssims)), per_image, per_block, images)


def spread_views(scene: Scene, count: int) -> Scene:
    """``scene`` with ``count`` of its frames, evenly spaced over the split (all when ``count`` is
    0 or covers them): fewer full images to render at every checkpoint, from every part of the
    scene."""
    if count <= 0 or count >= len(scene.frames):
        return scene
    picks = np.linspace(0, len(scene.frames) - 1, count).round().astype(int)
    return dataclasses.replace(scene, frames=[scene.frames[i] for i in picks])


def ray_midpoint_blocks(
    field_cfg: RadianceFieldConfig, partition: BlockPartition, scene: Scene
) -> list[np.ndarray]:
    """Per frame, (H*W,) the block of the midpoint of every pixel's ray inside the scene box:
    a pixel-to-block assignment that does not depend on the model, so every method's per-block
    PSNR covers the same pixels (and a model that renders mostly empty space still has some)."""
    blocks = []
    for frame in scene.frames:
        origins, directions = frame_rays(frame)
        near, far, _ = near_far_from_box(origins, directions, *field_cfg.box, min_near=scene.near)
        if scene.far is not None:
            far = far.clamp_max(float(scene.far))
        middle = origins + directions * ((near + far) / 2)[:, None]
        blocks.append(partition.route_points(middle.cpu().numpy()))
    return blocks


def pixel_blocks(out: dict[str, torch.Tensor], partition: BlockPartition) -> np.ndarray:
    """(H*W,) block id of each pixel's expected termination point; -1 for background pixels."""
    blocks = partition.route_points(out["points"].reshape(-1, 3).cpu().numpy())
    return np.where(out["opacity"].reshape(-1).cpu().numpy() >= 0.5, blocks, -1)


class RenderedCityScorer:
    """The protocol's scorer for a city (:class:`~mclnf_dist.evaluation.protocol.Scorer`): every
    checkpoint renders the held-out views through the city model a user would get (each sample
    point routed to its block's module, or the one network) and scores the full images, so the
    continual phase measures the rendered model, not modules rendering whole rays on their own.

    A segment's PSNR is that of the pixels whose ray midpoint (inside the scene box) lies in its
    block (``block_order[t]``): fixed once, the same pixels for every method and checkpoint (a
    random init renders little but empty space, so "where its rays end" would leave no pixel to
    score); a block with no such pixel scores NaN.
    """

    def __init__(
        self,
        field_cfg: RadianceFieldConfig,
        partition: BlockPartition,
        block_order: list[int],
        scene: Scene,
    ) -> None:
        self.field_cfg, self.partition, self.scene = field_cfg, partition, scene
        self.block_order = list(block_order)
        self.fixed_blocks = ray_midpoint_blocks(field_cfg, partition, scene)

    def measure(self, ctx: MethodContext, params: Params) -> Measurement:
        modular = ctx.spec.modular
        route = module_router(self.partition, self.block_order, modular)
        field = ctx.field  # the method's own (a parameter-matched network is larger)
        scores = score_city_images(
            field, params, route, self.partition, self.scene, None, "", self.fixed_blocks
        )
        segments = [scores.per_block.get(b, float("nan")) for b in self.block_order]
        return Measurement(scores.psnr, segments)
