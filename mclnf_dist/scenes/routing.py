"""Routing world points to the modules of a city model: a block partition and the blocks'
arrival order give each point its module (and, near a seam, the modules and weights it blends).
Evaluation, rendering and the saved city model all route through :func:`module_router`."""

import torch
from torch import Tensor

from mclnf_dist.nerf.render import BlockRouter, partition_router
from mclnf_dist.scenes.partition import BlockPartition


def module_router(
    partition: BlockPartition, block_order: list[int], modular: bool, time: float | None = None
) -> BlockRouter:
    """Route a 3-D point to its block's module (position in arrival order); one net: module 0.

    The router also names the seam candidates of a point (``router.candidates(points,
    margin)``: modules and weights of :meth:`BlockPartition.blend_points`), which rendering uses
    when the field's ``seam_margin > 0``; one network has no seams (weight 1 on module 0).
    A seam margin wider than the partition's overlap blends modules where one of them never
    saw training rays: :func:`seam_margin_problem` says so.
    """
    by_block = torch.zeros(partition.num_blocks, dtype=torch.int64)
    for position, block in enumerate(block_order):
        by_block[block] = position
    blocks = partition_router(partition, time)

    def route(points: Tensor) -> Tensor:
        if not modular:
            return torch.zeros(points.shape[0], dtype=torch.int64, device=points.device)
        return by_block.to(points.device)[blocks(points)]

    def blend(points: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        if not modular:
            zeros = torch.zeros(points.shape[0], 1, dtype=torch.int64, device=points.device)
            return zeros, torch.ones(points.shape[0], 1, dtype=points.dtype, device=points.device)
        ids, weights = blocks.candidates(points, margin)
        return by_block.to(points.device)[ids], weights

    at_time = None
    if modular and partition.time_slices > 1:
        at_time = lambda t: module_router(partition, block_order, modular, t)  # noqa: E731
    return BlockRouter(route, blend, at_time)


def seam_margin_problem(partition: BlockPartition, seam_margin: float) -> str | None:
    """Why ``seam_margin`` blends outside the blocks' shared training data, or None.

    A point is blended with block b when ``d_b - d_1 < seam_margin * spacing``; it lies in b's
    overlap region (its rays are b's training data) when ``d_b - d_1 <= 2 * margin``.
    """
    band = seam_margin * partition.block_spacing
    if seam_margin <= 0 or partition.num_space_blocks < 2 or band <= 2 * partition.margin:
        return None
    return (
        f"seam_margin {seam_margin} blends over {band:.3g} world units but blocks overlap by "
        f"{2 * partition.margin:.3g}: keep seam_margin <= "
        f"{2 * partition.margin / partition.block_spacing:.3g}"
    )
