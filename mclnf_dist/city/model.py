"""The saved city model: every block's module, the partition that routes points to them and the
radiance field, which is all it takes to render any view of the city again.

A model folder (a local path or any fsspec URI) holds ``partition.json`` (shared by the methods
of one run) and one ``<method>.pt`` per method: a state file (:mod:`mclnf_dist.state`) of
``params`` (stacked, on the CPU), ``block_order`` (module ``i`` serves block
``block_order[i]``), ``field`` (the
:class:`RadianceFieldConfig` as a dict) and ``modular`` (False: one network serves every block).
:func:`load_city_model` is the one reader; the city job renders its pictures through it, so the
saved model is exactly what the pictures show. Points reach their block's module through
:func:`mclnf_dist.scenes.routing.module_router`.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from mclnf_dist.cameras.frame import Frame
from mclnf_dist.distributed.block_training import CHECKPOINT
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.nerf.field import RadianceFieldConfig, field_from_dict
from mclnf_dist.nerf.render import RouteFn, render_view
from mclnf_dist.scenes.partition import BlockPartition, load_partition
from mclnf_dist.scenes.routing import module_router
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
    checkpoints: str = ""
    """A preview's folder of block checkpoints (:func:`watched_params`); "" for a trained model."""

    def render(
        self,
        frame: Frame,
        near: float = 0.0,
        far: float | None = None,
        chunk: int = 2048,
        on_chunk: Callable[[int], None] | None = None,
    ) -> Tensor:
        """(H, W, 3) rgb of ``frame`` (see :func:`~mclnf_dist.nerf.render.render_view`)."""
        return render_view(self.field, self.params, frame, self.route, near, far, chunk, on_chunk)


def save_city_model(
    folder: str,
    method: str,
    field: RadianceFieldConfig,
    params: Params,
    partition: BlockPartition,
    block_order: list[int],
    modular: bool,
    scene: dict | None = None,
    checkpoints: str = "",
) -> str:
    """Write ``folder/partition.json`` and ``folder/<method>.pt`` atomically; returns the latter.

    ``scene``: ``{"root": scene folder, "options": load_scene options}`` (what ``mclnf render``
    reads held-out cameras and intrinsics from). ``checkpoints``: a preview's folder of block
    checkpoints (:func:`watched_params`)."""
    partition.save(folder)
    state = {
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "block_order": list(block_order),
        "field": dataclasses.asdict(field),
        "modular": modular,
        "scene": scene or {},
        "checkpoints": checkpoints,
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
        state.get("checkpoints", ""),
    )


PREVIEW_PREFIX = "preview-"
"""``preview-<init>.pt``: written when block training starts (every module at the init, and where
the blocks' checkpoints land); ``mclnf view --watch`` shows the blocks as they are trained."""


def preview_checkpoints(folder: str, name: str) -> str:
    """The folder of block checkpoints the preview ``name`` of ``folder`` names."""
    root = load_state(join(folder.rstrip("/"), f"{name}.pt"), KIND).get("checkpoints", "")
    if not root:
        raise MclnfError(f"{folder}/{name}.pt is not a preview (it names no block checkpoints)")
    return root


def checkpoints_stamp(root: str) -> float:
    """The newest modification time of the block checkpoints in ``root`` (0: none yet)."""
    fs, base = filesystem_for(root)
    if not fs.exists(base):
        return 0.0
    times = [float(e.get("mtime", 0) or 0) for e in fs.ls(base, detail=True)]
    return max(times, default=0.0)


def watched_params(folder: str, name: str) -> tuple[CityModel, list[int]]:
    """The preview ``name`` of ``folder`` with every block checkpoint that has landed put in its
    module; returns the model and the blocks whose checkpoint it read."""
    model = load_city_model(folder, name)  # the preview's file, read once
    root = model.checkpoints
    if not root:
        raise MclnfError(f"{folder}/{name}.pt is not a preview (it names no block checkpoints)")
    fs, base = filesystem_for(root)
    params = {k: v.clone() for k, v in model.params.items()}
    landed = []
    for module, block in enumerate(model.block_order):
        path = join(base, f"block-{block:04d}.pt")
        if not fs.exists(path):
            continue
        state = load_state(join(root, f"block-{block:04d}.pt"), CHECKPOINT)
        for key, value in state["params"].items():
            params[key][module] = value.reshape(params[key][module].shape)
        landed.append(block)
    return model._replace(params=params), landed
