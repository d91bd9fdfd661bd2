"""Can a capture belong to a saved city model's world? What ``--extend`` checks before training.

A capture of another place, in other units or of another object (the fox figurine beside the
demo city) can sit inside the model's box by accident of its coordinates; trained, it would be
a block of nonsense in the model. Checked from the cameras alone, before any ray is read:

* **scale**: the new cameras' spread over the ground is compared with the size of the model's
  blocks (a capture spread over a tenth of a block is an object, or other units) and with the
  model's box (ten times wider: another world, or other units);
* **place**: the new cameras stand over the model box's ground, or within one box side of it;
* **view**: the central rays of the new views hit the model's box.

What cannot be told from cameras (the same units in another place that fits the box, another
up-axis convention that happens to fit) is stated in the README's ``--extend`` section.
"""

import numpy as np

from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.partition import BlockPartition, ground_axes
from mclnf_dist.scenes.scene import Scene

MIN_SPREAD_OF_BLOCK = 0.1
"""The new cameras' ground spread must be at least this fraction of the model's block side."""
MAX_SPREAD_OF_BOX = 10.0
"""... and at most this many times the model box's largest ground side."""
MIN_CAMERAS_NEAR_BOX = 0.9
"""Fraction of new cameras that must stand over the model box's ground (or within one box side)."""
MIN_CENTRAL_RAYS_IN_BOX = 0.5
"""Fraction of the new views whose central ray must hit the model's box."""


def check_same_world(scene: Scene, box, partition: BlockPartition, name: str) -> None:
    """Raise one :class:`MclnfError` line naming the capture ``name``, the number that failed and
    its threshold, unless the capture ``scene`` can belong to the model (``box``: the model's
    field box, ``partition``: its blocks)."""
    axes = list(ground_axes(partition.up_axis))
    low, high = np.asarray(box, dtype=np.float64)
    centres = scene.camera_centers()[:, axes]
    spread = float((centres.max(0) - centres.min(0)).max())
    side = block_side(partition)
    if spread < MIN_SPREAD_OF_BLOCK * side:
        raise MclnfError(
            f"{name}: its cameras spread {spread:.3g} units over the ground, "
            f"{spread / side:.3g} of the model's block side {side:.3g} (expected at least "
            f"{MIN_SPREAD_OF_BLOCK:g}: a capture of another world, an object, or other units)"
        )
    box_side = float((high - low)[axes].max())
    if spread > MAX_SPREAD_OF_BOX * box_side:
        raise MclnfError(
            f"{name}: its cameras spread {spread:.3g} units over the ground, "
            f"{spread / box_side:.3g} times the model box's side {box_side:.3g} (expected at most "
            f"{MAX_SPREAD_OF_BOX:g}: a capture of another world, or other units)"
        )
    reach_low, reach_high = low[axes] - box_side, high[axes] + box_side
    near = float(((centres >= reach_low) & (centres <= reach_high)).all(1).mean())
    if near < MIN_CAMERAS_NEAR_BOX:
        raise MclnfError(
            f"{name}: {near:.0%} of its cameras stand over the model box's ground or within one "
            f"box side ({box_side:.3g}) of it (expected at least {MIN_CAMERAS_NEAR_BOX:.0%})"
        )
    hits = central_rays_in_box(scene, low, high)
    if hits < MIN_CENTRAL_RAYS_IN_BOX:
        raise MclnfError(
            f"{name}: {hits:.0%} of its views look into the model's box (central ray) "
            f"(expected at least {MIN_CENTRAL_RAYS_IN_BOX:.0%})"
        )


def block_side(partition: BlockPartition) -> float:
    """A typical block side of the partition: the side of a square of one block's ground area."""
    area = float(np.prod(partition.bounds[1] - partition.bounds[0]))
    return float(np.sqrt(max(area, 0.0) / max(1, len(partition.centroids))))


def central_rays_in_box(scene: Scene, low: np.ndarray, high: np.ndarray) -> float:
    """Fraction of the views whose central ray (camera centre along its -z axis) meets the box
    in front of the camera (a slab test)."""
    poses = np.stack([frame.c2w for frame in scene.frames])  # (N, 4, 4)
    origins, directions = poses[:, :3, 3], -poses[:, :3, 2]  # (N, 3) each
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low, t_high = (low - origins) / directions, (high - origins) / directions
    entry = np.nanmax(np.minimum(t_low, t_high), axis=1)
    leave = np.nanmin(np.maximum(t_low, t_high), axis=1)
    return float((leave >= np.maximum(entry, 0.0)).mean())
