"""The saved city model: every block's module, the partition that routes points to them and the
radiance field, which is all it takes to render any view of the city again.

A model folder (a local path or any fsspec URI) holds ``partition.json`` (shared by the methods
of one run) and one ``<method>.pt`` per method: a state file (:mod:`mclnf_dist.state`) of
``params`` (stacked, on the CPU), ``block_order`` (module ``i`` serves block
``block_order[i]``), ``field`` (the
:class:`RadianceFieldConfig` as a dict) and ``modular`` (False: one network serves every block).
:func:`load_city_model` is the one reader; the city job renders its pictures through it, so the
saved model is exactly what the pictures show. It lives with the scenes, not in :mod:`nerf`,
because routing needs the block partition (scenes depend on nerf, not the other way round).
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.nerf.field import RadianceFieldConfig, field_from_dict
from mclnf_dist.nerf.render import BlockRouter, RouteFn, partition_router, render_view
from mclnf_dist.scenes.partition import BlockPartition, load_partition
from mclnf_dist.state import load_state, save_state
from mclnf_dist.storage import filesystem_for, join

KIND = "city model"


class CityModel(NamedTuple):
    """A trained city, ready to render: ``model.render(frame, near, far)``."""

    field: RadianceFieldConfig
    params: Params
    """Stacked parameters, one module per block in arrival order (one module if not modular)."""
    route: RouteFn
    """World points (P, 3) -> (P,) module ids."""
    scene: dict
    """How to read the scene it was trained on again: ``root`` and the
    :func:`~mclnf_dist.scenes.scene.load_scene` options (``{}`` when not recorded)."""
    block_order: list[int]
    """Module ``i`` serves block ``block_order[i]``."""
    modular: bool
    """False: one network serves every block."""

    def render(
        self,
        frame,
        near: float = 0.0,
        far: float | None = None,
        chunk: int = 2048,
        on_chunk: Callable[[int], None] | None = None,
    ) -> Tensor:
        """(H, W, 3) rgb of ``frame`` (see :func:`~mclnf_dist.nerf.render.render_view`)."""
        return render_view(self.field, self.params, frame, self.route, near, far, chunk, on_chunk)


def module_router(partition: BlockPartition, block_order: list[int], modular: bool) -> BlockRouter:
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
    blocks = partition_router(partition)

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

    return BlockRouter(route, blend)


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


def save_city_model(
    folder: str,
    method: str,
    field: RadianceFieldConfig,
    params: Params,
    partition: BlockPartition,
    block_order: list[int],
    modular: bool,
    scene: dict | None = None,
) -> str:
    """Write ``folder/partition.json`` and ``folder/<method>.pt`` atomically; returns the latter.

    ``scene``: ``{"root": scene folder, "options": load_scene options}`` (what ``mclnf render``
    reads held-out cameras and intrinsics from)."""
    partition.save(folder)
    state = {
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "block_order": list(block_order),
        "field": dataclasses.asdict(field),
        "modular": modular,
        "scene": scene or {},
    }
    return save_state(join(folder.rstrip("/"), f"{method}.pt"), KIND, state)


def load_city_model(folder: str, method: str) -> CityModel:
    """The city model ``method`` saved in ``folder`` by :func:`save_city_model`."""
    fs, root = filesystem_for(folder)
    if not fs.exists(join(root, f"{method}.pt")):
        raise MclnfError(f"no saved city model {method!r} in {folder}")
    state = load_state(join(folder.rstrip("/"), f"{method}.pt"), KIND)
    route = module_router(load_partition(folder), state["block_order"], state["modular"])
    scene = state.get("scene", {})
    return CityModel(
        field_from_dict(state["field"]),
        state["params"],
        route,
        scene,
        list(state["block_order"]),
        bool(state["modular"]),
    )
