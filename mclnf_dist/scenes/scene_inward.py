"""Inward-facing captures (an object or a building filmed from around it) and the region their
cameras look at: the automatic box of such a scene (:mod:`mclnf_dist.scenes.scene_bounds`).

**Classifier.** The capture is *inward-facing* when its cameras' optical axes converge on a point
that the cameras surround:

1. the focus ``p`` is the least-squares point closest to every optical axis (the line through a
   camera's centre along its viewing direction), ``sum_i (I - a_i a_i^T) (p - o_i) = 0``; it must
   be well defined (the axes are not all parallel);
2. ``p`` is in the picture of at least :data:`MIN_VIEWS_ON_FOCUS` of the views (in front of the
   camera and inside its image rectangle), so the capture really looks at one place;
3. the cameras surround ``p``: the median angle between a view's direction to ``p`` and the mean
   of those directions is at least :data:`MIN_SPREAD_DEGREES` (a 60 degree arc of cameras has a
   median of 15 degrees; a ring or a hemisphere 60 to 90, a forward-facing capture a few).

Street and aerial-strip captures, forward-facing captures and cameras looking outward fail 2 or 3
and keep the box around their cameras.

**The looked-at region.** The points seen by at least :data:`REGION_SEEN_BY` of the views that
have the focus in their picture (each view a frustum from its pose and intrinsics: the four image
edges as tangents, lens distortion ignored), found by counting on a grid around the focus (a
coarse pass over a cube reaching the farthest camera, then a fine pass over what it found), its
bounding box grown by one fine cell, then grown to a cube about its centre.

Why this rule: an object capture frames the object in (nearly) every view, so the object lies in
the intersection of the views' frustums. The intersection is exact, needs no guess of the object's
size, follows the real field of view (portrait or landscape, asymmetric principal point) and,
unlike ``distance * tan(half FOV)`` about the focus, is bounded along the viewing direction too by
views from other sides. Counting a share of the views instead of intersecting all of them keeps a
few close-ups or stray views (a tenth) from shrinking it, and views that do not show the focus at
all (at most a fifth) do not vote. The cube, as for the box around cameras: the field's resolution
is the same along every axis, and the rays of the views (whose rectangles reach past the
intersection) nearly all cross it instead of missing it (on the real fox capture, 50 views at
1/8 scale, 99.8% of the pixels' rays cross the cube, at least 98% in every view; about 93% cross
the tight box; a ray that misses the box shows the background colour).
"""

from dataclasses import dataclass

import numpy as np

MIN_VIEWS_ON_FOCUS = 0.8
"""Share of the views that must have the focus in their picture."""
MIN_SPREAD_DEGREES = 15.0
"""Median angle between the views' directions to the focus and their mean direction."""
REGION_SEEN_BY = 0.9
"""Share of the views on the focus that must see a point of the looked-at region."""
GRID = 40
"""Grid points per axis of each counting pass."""
MAX_VOTERS = 200
"""Views counted at most (evenly picked): the region's cost stays well under a second."""


@dataclass
class Capture:
    """What the cameras of a scene do: converge on a focus they surround, or not."""

    inward: bool
    focus: np.ndarray | None
    """(3,) the least-squares point closest to every optical axis (None when the axes are
    parallel)."""
    on_focus: np.ndarray
    """(N,) bool: views with the focus in their picture."""
    spread_degrees: float
    """Median angle between the directions to the focus and their mean (0 without a focus)."""
    why: str
    """One phrase: what made the capture inward-facing or not."""


def camera_frames(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) centres and (N, 3, 3) rotations with unit columns (right, up, back) of ``poses``."""
    rotations = poses[:, :3, :3] / np.linalg.norm(poses[:, :3, :3], axis=1, keepdims=True)
    return poses[:, :3, 3], rotations


def in_view(poses: np.ndarray, cones: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, P) bool: point ``p`` is in front of camera ``i`` and inside its image rectangle.

    ``cones`` (N, 4): tangents of the image edges as seen from the camera, ``x / depth`` from
    ``-cones[:, 0]`` to ``cones[:, 1]`` and ``y / depth`` from ``-cones[:, 2]`` to ``cones[:, 3]``.
    """
    centres, rotations = camera_frames(poses)
    local = (points[None] - centres[:, None]) @ rotations  # (N, P, 3) in camera axes
    depth = -local[..., 2]
    x, y = local[..., 0], local[..., 1]
    return (
        (depth > 0)
        & (x >= -cones[:, 0:1] * depth)
        & (x <= cones[:, 1:2] * depth)
        & (y >= -cones[:, 2:3] * depth)
        & (y <= cones[:, 3:4] * depth)
    )


def least_squares_focus(poses: np.ndarray) -> np.ndarray | None:
    """The point closest (least squares) to every optical axis, None when they are parallel."""
    centres, rotations = camera_frames(poses)
    axes = -rotations[:, :, 2]
    projectors = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # (N, 3, 3)
    normal = projectors.mean(axis=0)
    if np.linalg.eigvalsh(normal)[0] < 1e-3:  # axes within ~2 degrees of one direction
        return None
    return np.linalg.solve(normal, np.einsum("nij,nj->i", projectors, centres) / len(poses))


def classify_capture(poses: np.ndarray, cones: np.ndarray) -> Capture:
    """Inward-facing or not (module docstring); ``poses`` (N, 4, 4), ``cones`` (N, 4)."""
    focus = least_squares_focus(poses)
    none = np.zeros(len(poses), dtype=bool)
    if focus is None:
        return Capture(False, None, none, 0.0, "the optical axes are parallel")
    on_focus = in_view(poses, cones, focus[None])[:, 0]
    directions = focus - poses[:, :3, 3]
    directions /= np.maximum(np.linalg.norm(directions, axis=-1, keepdims=True), 1e-300)
    mean = directions[on_focus].mean(axis=0) if on_focus.any() else directions.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-300)
    angles = np.degrees(np.arccos(np.clip(directions[on_focus] @ mean, -1.0, 1.0)))
    spread = float(np.median(angles)) if len(angles) else 0.0
    share = float(on_focus.mean())
    where = np.round(focus, 3).tolist()
    if share < MIN_VIEWS_ON_FOCUS:
        why = (
            f"the optical axes' closest point {where} is in {share:.0%} of the views "
            f"(inward-facing needs {MIN_VIEWS_ON_FOCUS:.0%})"
        )
        return Capture(False, focus, on_focus, spread, why)
    if spread < MIN_SPREAD_DEGREES:
        why = (
            f"the views on {where} spread {spread:.0f} degrees about it "
            f"(inward-facing needs {MIN_SPREAD_DEGREES:.0f})"
        )
        return Capture(False, focus, on_focus, spread, why)
    why = f"{share:.0%} of the views converge on {where} from {spread:.0f} degrees around it"
    return Capture(True, focus, on_focus, spread, why)


def looked_at_box(poses: np.ndarray, cones: np.ndarray, capture: Capture) -> np.ndarray:
    """(2, 3) cube around what the views on the focus look at (module docstring)."""
    voters = np.flatnonzero(capture.on_focus)
    picks = np.linspace(0, len(voters) - 1, min(len(voters), MAX_VOTERS)).round().astype(int)
    poses, cones = poses[voters[picks]], cones[voters[picks]]
    needed = int(np.ceil(REGION_SEEN_BY * len(poses) - 1e-9))
    focus = capture.focus
    reach = float(np.linalg.norm(poses[:, :3, 3] - focus, axis=-1).max())
    low, high = focus - reach, focus + reach
    for _ in range(2):
        axes = [np.linspace(lo, hi, GRID) for lo, hi in zip(low, high, strict=True)]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        counts = np.zeros(len(points), dtype=np.int64)
        for start in range(0, len(poses), 16):  # (16, GRID^3) at a time: bounded memory
            part = slice(start, start + 16)
            counts += in_view(poses[part], cones[part], points).sum(axis=0)
        seen = points[counts >= needed]
        if not len(seen):  # finer than the grid: keep the focus's cell
            seen = focus[None]
        cell = (high - low) / (GRID - 1)
        low, high = seen.min(axis=0) - cell, seen.max(axis=0) + cell
    centre, half = (low + high) / 2, float((high - low).max()) / 2
    return np.stack([centre - half, centre + half])
