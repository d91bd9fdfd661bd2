"""Extending a saved city model with new captures: only the new blocks are trained.

``python pipelines/city_nerf.py --extend outputs/city --data.scene NEW`` (the latest completed
run's ``blocks-meta``; or name a model: ``--extend <run>/city_model/blocks-random``):
the new captures' cameras get a ``blocks_x x blocks_y`` grid of new blocks appended to the model's
partition (the old blocks keep their ids and centroids), their rays are ingested against that
partition, and each new block's module trains from the model's ``theta_0`` (the
``theta0-mse.pt`` saved beside it, or ``--meta.init-from``), exactly as block training does. The
old modules are copied, bit-identical, in front of the new ones; the extended model (with its
``theta_0``) is saved in this run's ``city_model/`` and scored on the new captures' held-out views.

The field's scene box is the model's: a city that will grow needs a box covering its future
extent from the start (``--field.scene-box``), so new captures must lie inside it.
"""

import dataclasses
from pathlib import Path

import numpy as np

from mclnf_dist.city.blocks import block_phase
from mclnf_dist.city.data import prepare_city
from mclnf_dist.city.init_asset import load_init, save_init
from mclnf_dist.city.model import CityModel, load_city_model
from mclnf_dist.city.results import ExtensionResult
from mclnf_dist.city.world import check_same_world
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.progress import ProgressLog
from mclnf_dist.runs import RunFolders, city_model_folder
from mclnf_dist.scenes.partition import BlockPartition, ground_axes, load_partition
from mclnf_dist.scenes.scene import check_scene, scene_options


def model_location(path: str) -> tuple[str, str]:
    """The saved city model ``--extend`` names -> (city_model folder, model name).

    ``path``: ``<folder>/<name>`` of a model in a completed run (``.../city_model/blocks-meta``),
    or a run or work folder (its latest completed run's ``blocks-meta``).
    """
    given = Path(path.rstrip("/"))
    name = given.name.removesuffix(".pt")
    if (given.parent / f"{name}.pt").exists():
        return str(city_model_folder(given.parent)), name
    if given.is_dir():
        return str(city_model_folder(given)), "blocks-meta"
    raise MclnfError(
        f"--extend {path}: no saved city model there (expected <city_model folder>/<name>, "
        "e.g. outputs/city/runs/city-demo/<id>/city_model/blocks-meta, or a work folder)"
    )


def open_extension(cfg) -> tuple[str, str, CityModel, BlockPartition, Params]:
    """(folder, name, model, partition, theta_0) of the model ``--extend`` names, once every
    check that needs no Ray has passed: the model is modular, its ``theta_0`` (or
    ``--meta.init-from``) fits it, and the new capture lies in its box and can belong to its
    world (:func:`~mclnf_dist.city.world.check_same_world`). The preflight and the
    extension itself both call it."""
    if not cfg.data.scene:
        raise MclnfError("--extend needs --data.scene: the new captures to add to the model")
    folder, name = model_location(cfg.extend)
    model = load_city_model(folder, name)
    if not model.modular:
        raise MclnfError(f"--extend {cfg.extend}: one network for all blocks (not modular)")
    like = {k: v[:1] for k, v in model.params.items()}
    theta0 = load_init(cfg.meta.init_from or folder, "mse", like, cfg.run.tracking_uri)
    partition = load_partition(folder)
    scene = check_scene(cfg.data.scene, **scene_options(cfg.data, None))
    check_inside(scene.scene_box, model.field.box, partition.up_axis, cfg.data.scene)
    check_same_world(scene, model.field.box, partition, cfg.data.scene)
    return folder, name, model, partition, theta0


def extend_city(cfg, run: RunFolders, parallel: bool, log: ProgressLog) -> ExtensionResult:
    """Add the scene ``cfg.data.scene``'s blocks to the model ``cfg.extend``; returns the report.

    ``cfg``: the city job's config (its ``data``, ``block``, ``meta.init_from``, ``seed``).
    """
    folder, name, model, old, theta0 = open_extension(cfg)
    box = model.field.box
    scene = check_scene(cfg.data.scene, **scene_options(cfg.data, box))
    partition = old.extended(scene.camera_centers(), cfg.data.blocks_x, cfg.data.blocks_y)
    new_blocks = list(range(old.num_blocks, partition.num_blocks))
    city = prepare_city(cfg.data, log, box, partition, unbounded=model.field.contraction)
    trained = [b for b in city.block_order if b in new_blocks]
    if not trained:
        raise MclnfError(f"{cfg.data.scene}: no rays fall in the new blocks {new_blocks}")
    log.info(
        f"extending {name} of {folder} ({len(model.block_order)} blocks, kept as they are) with "
        f"blocks {trained} of {cfg.data.scene}"
    )
    out = run.out
    save_init(out / "city_model", "mse", theta0, model.field)  # so it can be extended again
    city = dataclasses.replace(city, block_order=trained, meta_blocks=[])
    blocks = block_phase(
        cfg.block,
        {"meta": theta0},
        model.field,
        city,
        f"{run.storage.rstrip('/')}/blocks",
        out,
        cfg.run.seed,
        parallel,
        log,
        frozen=(model.params, model.block_order),
    )
    return ExtensionResult(f"{folder}/{name}", model.block_order, blocks)


def check_inside(new_box, box, up_axis: str, scene: str) -> None:
    """The new captures' own box must lie in the model's (its field cannot reach further), on
    the ground plane, to 1 % of the model box's size."""
    axes = list(ground_axes(up_axis))
    low, high = np.asarray(box, dtype=np.float64)[:, axes]
    new_low, new_high = np.asarray(new_box, dtype=np.float64)[:, axes]
    slack = 0.01 * (high - low)
    if (new_low < low - slack).any() or (new_high > high + slack).any():
        raise MclnfError(
            f"{scene}: its scene box {np.asarray(new_box).round(2).tolist()} reaches outside the "
            f"model's scene box {np.asarray(box).round(2).tolist()}; a city that will grow needs "
            "a --field.scene-box covering its future extent when it is first trained"
        )
