"""A scene's box and near/far depth range, when the transforms file gives them and when it does not.

The box is what the field normalises points with and what rays are clipped to, so every split of a
scene must get the *same* box: it is derived from the cameras of all splits. In order:

1. an explicit box from the user (``--field.scene-box``) wins;
2. the file's ``scene_box`` ([[min x, y, z], [max x, y, z]]);
3. an *inward-facing* capture (an object or a building filmed from around it; the classifier and
   the rule: :mod:`mclnf_dist.scenes.scene_inward`) gets the region its views look at, a cube
   around what at least 90% of the views on the cameras' common focus see;
   with instant-ngp's ``aabb_scale`` (rule 4) the looked-at region is chosen only when it is
   clearly tighter (at most half the volume of the ``aabb_scale`` box), clipped to that box;
4. instant-ngp's ``aabb_scale``: instant-ngp maps a pose position ``p`` to ``p * scale + offset``
   (defaults ``scale`` 0.33, ``offset`` 0.5 per axis, both readable from the file) and bounds the
   scene by the cube of side ``aabb_scale`` centred at 0.5 in those units; mapped back, the box is
   ``[(0.5 - aabb_scale/2 - offset) / scale, (0.5 + aabb_scale/2 - offset) / scale]`` per axis;
5. from the cameras (an outward, street or forward-facing capture): the bounds of the camera
   centres and, when the depth range is known (``near`` and ``far`` in the file, or Blender's 2
   and 6), of the points at depth ``far`` along every optical axis (what the cameras can see),
   grown to a cube about their centre (as nerfstudio's scenes are: cameras inside a cube, the
   field's resolution the same along every axis, and a ring of cameras at one height still bounds
   the object below and above it).

Which rule chose the box, and why, is the scene's one ``box_note`` line (logged once).

Near/far: the file's ``near``/``far`` (distances along unit rays), else Blender's 2 and 6 for a
``camera_angle_x`` scene whose box was not given, else from the box: ``far`` = the largest
camera-to-corner distance, ``near`` = the smallest camera-to-box distance (the cameras of an
inward-facing capture stand outside its box), at least ``far / 1000`` (per-ray bounds are clipped
to the box later).
"""

import logging

import numpy as np

from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.scene_cameras import number
from mclnf_dist.scenes.scene_inward import (
    REGION_SEEN_BY,
    Capture,
    classify_capture,
    looked_at_box,
)

log = logging.getLogger(__name__)

BLENDER_NEAR_FAR = (2.0, 6.0)
INSTANT_NGP_SCALE, INSTANT_NGP_OFFSET = 0.33, 0.5
CLEARLY_TIGHTER = 0.5
"""The looked-at region replaces an ``aabb_scale`` box when at most this share of its volume."""
_logged: set[str] = set()


def parse_box(path: str, value) -> np.ndarray:
    """A (2, 3) box with min corner strictly below max corner, or a one-line error."""
    try:
        box = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (2, 3) or not np.isfinite(box).all() or not (box[0] < box[1]).all():
        raise MclnfError(
            f"{path}: 'scene_box' must be [[min x, y, z], [max x, y, z]] (min < max, a volume), "
            f"got {value!r}"
        )
    return box


def explicit_near_far(path: str, meta: dict) -> tuple[float, float] | None:
    """The file's ``near``/``far`` (both or neither), or None."""
    if "near" not in meta and "far" not in meta:
        return None
    if "near" not in meta or "far" not in meta:
        raise MclnfError(f"{path}: 'near' and 'far' must be given together")
    near, far = number(path, "near", meta["near"]), number(path, "far", meta["far"])
    if not 0 <= near < far:
        raise MclnfError(f"{path}: expected 0 <= near < far, got near={near}, far={far}")
    return near, far


def aabb_box(path: str, meta: dict) -> np.ndarray:
    """instant-ngp's bounding box of ``aabb_scale``, in the file's world units."""
    size = number(path, "aabb_scale", meta["aabb_scale"])
    scale = number(path, "scale", meta.get("scale", INSTANT_NGP_SCALE))
    offset = meta.get("offset", [INSTANT_NGP_OFFSET] * 3)
    if not isinstance(offset, list) or len(offset) != 3:
        raise MclnfError(f"{path}: 'offset' must be a list of 3 numbers, got {offset!r}")
    offset = np.array([number(path, "offset", v) for v in offset])
    if size <= 0 or scale <= 0:
        raise MclnfError(f"{path}: 'aabb_scale' and 'scale' must be > 0 (a zero-volume box)")
    return np.stack([(0.5 - size / 2 - offset) / scale, (0.5 + size / 2 - offset) / scale])


def camera_box(path: str, poses: np.ndarray, far: float | None) -> np.ndarray:
    """The box around the cameras (module docstring, rule 4); ``poses`` (N, 4, 4)."""
    centres = poses[:, :3, 3]
    points = centres
    if far is not None:
        axes = -poses[:, :3, 2] / np.linalg.norm(poses[:, :3, 2], axis=-1, keepdims=True)
        points = np.concatenate([centres, centres + far * axes])
    low, high = points.min(axis=0), points.max(axis=0)
    longest = float((high - low).max())
    if not longest > 0:
        raise MclnfError(
            f"{path}: cannot derive a scene box: all {len(poses)} cameras are at one point; "
            "add 'scene_box' (or 'near'/'far') to the file or pass --field.scene-box"
        )
    centre = (low + high) / 2
    return np.stack([centre - longest / 2, centre + longest / 2])


def camera_near_far(box: np.ndarray, centres: np.ndarray) -> tuple[float, float]:
    """``far`` = largest camera-to-corner distance, ``near`` = smallest camera-to-box distance,
    at least ``far / 1000``."""
    corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]])
    far = float(np.linalg.norm(centres[:, None] - corners[None], axis=-1).max())
    outside = np.maximum(np.maximum(box[0] - centres, centres - box[1]), 0.0)
    return max(1e-3 * far, float(np.linalg.norm(outside, axis=-1).min())), far


def inward_box(poses: np.ndarray, cones) -> tuple[Capture | None, np.ndarray | None]:
    """(the capture's classification, its looked-at box when inward-facing, else None).

    ``cones``: per pose (4,) image-edge tangents or None (unknown: the median of the known ones);
    with none known the capture is not classified (``(None, None)``).
    """
    known = [c for c in (cones if cones is not None else []) if c is not None]
    if not known or len(known) != len(cones):
        if not known:
            return None, None
        typical = np.median(np.stack(known), axis=0)
        cones = [typical if c is None else c for c in cones]
    cones = np.stack(cones).astype(np.float64)
    capture = classify_capture(poses, cones)
    return capture, looked_at_box(poses, cones, capture) if capture.inward else None


def rounded(box: np.ndarray) -> list:
    return np.round(box, 4).tolist()


def scene_bounds(
    path: str, meta: dict, poses: np.ndarray, override=None, cones=None
) -> tuple[np.ndarray, float, float, str]:
    """(box (2, 3), near, far, how the box was found: one line) for a scene.

    Args:
        path: the transforms file (for messages). meta: its top level.
        poses: (N, 4, 4) camera-to-world matrices of *all* splits (the same box for every split).
        override: an explicit box ((min corner), (max corner)), or None.
        cones: per pose, its (4,) image-edge tangents
            (:func:`~mclnf_dist.scenes.scene_cameras.view_cone`) or None; without any, no box is
            an inward-facing capture's.
    """
    name = path.rsplit("/", 1)[-1]
    depth = explicit_near_far(path, meta)
    if depth is None and "camera_angle_x" in meta and "fl_x" not in meta:
        blender = BLENDER_NEAR_FAR
    else:
        blender = None
    capture = region = None
    if override is None and "scene_box" not in meta:
        capture, region = inward_box(poses, cones)
    inward = (
        f"scene box from an inward-facing capture, the region {REGION_SEEN_BY:.0%} of the views "
        "on the cameras' focus look at"
    )
    why = f"{capture.why}; " if capture is not None else ""
    if override is not None:
        box = parse_box("--field.scene-box", override)
        note = f"scene box {box.tolist()} from --field.scene-box"
    elif "scene_box" in meta:
        box, note = parse_box(path, meta["scene_box"]), ""
    elif "aabb_scale" in meta:
        box = aabb_box(path, meta)
        aabb = f"aabb_scale {meta['aabb_scale']} (instant-ngp convention)"
        clipped = None
        if region is not None:
            clipped = np.stack([np.maximum(region[0], box[0]), np.minimum(region[1], box[1])])
        if clipped is not None and tighter(clipped, box, capture.focus):
            ratio = float(np.prod(box[1] - box[0]) / np.prod(clipped[1] - clipped[0]))
            note = (
                f"{inward}: {rounded(clipped)}, {ratio:.1f}x smaller in volume than the box of "
                f"{aabb} {rounded(box)} ({why}no scene_box in {name})"
            )
            box = clipped
        else:
            not_tighter = ""
            if region is not None:
                not_tighter = f"; the looked-at region {rounded(region)} is not clearly tighter"
            elif capture is not None:
                not_tighter = f"; not inward-facing: {capture.why}"
            note = f"scene box from {aabb}: {rounded(box)} (no scene_box in {name}{not_tighter})"
    elif region is not None:
        box = region
        note = f"{inward}: {rounded(box)} ({why}no scene_box in {name})"
    else:
        known = depth or blender
        box = camera_box(path, poses, None if known is None else known[1])
        why = f"; not inward-facing: {capture.why}" if capture is not None else ""
        note = f"scene box from cameras: {rounded(box)} (no scene_box in {name}{why})"
    if depth is None and "scene_box" not in meta and override is None:
        depth = blender
    if depth is None:
        depth = camera_near_far(box, poses[:, :3, 3])
    if note and f"{path}{note}" not in _logged:
        _logged.add(f"{path}{note}")
        log.info(note)
    return box, depth[0], depth[1], note


def tighter(region: np.ndarray, box: np.ndarray, focus: np.ndarray) -> bool:
    """``region`` (already inside ``box``) holds the focus and is clearly smaller than ``box``."""
    if not (region[0] < region[1]).all() or not ((region[0] <= focus) & (focus <= region[1])).all():
        return False
    return bool(np.prod(region[1] - region[0]) <= CLEARLY_TIGHTER * np.prod(box[1] - box[0]))
