"""Camera rays: one ray per pixel centre, and ray/box clipping for near/far bounds.

Convention (NeRF / Blender / nerfstudio, "OpenGL" camera), stated once here:

- ``c2w`` is a camera-to-world 4x4 matrix. Its columns 0, 1, 2 are the camera's right (+x), up
  (+y) and *back* (+z) axes in world coordinates; column 3 is the camera centre. The camera looks
  down its **-z** axis.
- Pixel ``(u, v)`` (column u to the right, row v downwards, row-major order ``v * W + u``) has its
  centre at ``(u + 0.5, v + 0.5)``; its camera-space direction is
  ``((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1)`` (image rows go down, camera +y goes up).
- Lens distortion (:mod:`mclnf_dist.cameras.lens`): with a ``distortion``, the pixel centre's
  normalised coordinate is the *distorted* one; the ray goes through its exact undistorted
  direction (OpenCV axes, y down, flipped into the camera convention above).
- Directions are **unit length**. So a depth ``t`` along a ray is the Euclidean distance from the
  camera centre, ``near``/``far`` and rendered depths are distances (not z-depths), and sample
  spacing means the same thing for every pixel (as in nerfstudio).

Rays are computed in float64 and returned as float32 torch tensors: float64 keeps the pose
arithmetic exact enough that the city generator's images are reproduced bit for bit, float32 is
what the fields consume.
"""

import numpy as np
import torch

from mclnf_dist.cameras.frame import Frame
from mclnf_dist.cameras.lens import Distortion, undistorted_directions
from mclnf_dist.errors import MclnfError

Number = float | int


def _as_float64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def camera_rays(
    c2w: np.ndarray | torch.Tensor,
    fx: Number | torch.Tensor,
    fy: Number | torch.Tensor,
    cx: Number | torch.Tensor,
    cy: Number | torch.Tensor,
    width: int,
    height: int,
    distortion: Distortion | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions of the ``H*W`` pixel-centre rays of one or more cameras.

    Args:
        c2w: camera-to-world matrices, (4, 4) or batched (N, 4, 4); numpy or torch.
        fx, fy, cx, cy: focal lengths and principal point in pixels; scalars or (N,) per camera.
        width, height: image size in pixels (shared by all cameras of a batch).
        distortion: the lens (shared by all cameras of a batch); None: an ideal pinhole.

    Returns:
        ``(origins, directions)``, each float32 CPU tensors (H*W, 3), or (N, H*W, 3) for batched
        ``c2w``; pixel order is row-major ``v * W + u``; directions have unit length. Not
        differentiable w.r.t. ``c2w`` (computed in numpy; there is no pose refinement).
    """
    # numpy, not torch, for the float64 arithmetic: 10-100x faster on CPU for these shapes.
    pose = _as_float64(c2w)
    if pose.shape[-2:] != (4, 4):
        raise ValueError(f"c2w must be (..., 4, 4), got {tuple(pose.shape)}")
    batch = pose.shape[:-2]
    fx_, fy_, cx_, cy_ = (
        np.broadcast_to(_as_float64(v), batch)[..., None] for v in (fx, fy, cx, cy)
    )  # (..., 1)
    u = np.tile(np.arange(width, dtype=np.float64), height) + 0.5  # (H*W,)
    v = np.repeat(np.arange(height, dtype=np.float64), width) + 0.5
    x = (u - cx_) / fx_  # (..., H*W)
    y = -(v - cy_) / fy_
    z = -1.0
    if distortion is not None:
        camera, residual = undistorted_directions(distortion, x, -y)  # (..., H*W, 3), OpenCV axes
        if not residual.max(initial=0.0) < 1e-9:
            raise MclnfError(f"lens distortion {distortion.describe()} does not invert here")
        x, y, z = camera[..., 0], -camera[..., 1], -camera[..., 2]
    rotation = pose[..., None, :3, :3]  # (..., 1, 3, 3)
    # Explicit multiply-adds (not a matmul) so results do not depend on the BLAS kernel.
    columns = [
        x * rotation[..., k, 0] + y * rotation[..., k, 1] + z * rotation[..., k, 2]
        for k in range(3)
    ]
    length = np.sqrt(columns[0] * columns[0] + columns[1] * columns[1] + columns[2] * columns[2])
    directions = np.stack([c / length for c in columns], axis=-1)  # (..., H*W, 3)
    origins = np.broadcast_to(pose[..., None, :3, 3], directions.shape)
    return (
        torch.from_numpy(origins.astype(np.float32)),
        torch.from_numpy(directions.astype(np.float32)),
    )


def near_far_from_box(
    origins: torch.Tensor,
    directions: torch.Tensor,
    box_min,
    box_max,
    min_near: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each ray enters and leaves an axis-aligned box (slab method).

    Why: sampling only inside the scene box spends every sample where the scene is; per-ray bounds
    matter for city scenes where a street ray and an aerial ray cross very different lengths.

    Args:
        origins, directions: (R, 3) rays (directions need not be unit length; ``t`` is in units
            of the direction's length).
        box_min, box_max: (3,) corners of the box.
        min_near: lower clamp of ``near`` (a camera inside the box starts at ``min_near``).

    Returns:
        ``(near, far, hit)``: (R,) entry and exit depths and a bool mask of rays that cross the
        box in front of the camera; for rays that miss, ``near == far == min_near``.
    """
    # np.array copies: the box may be a read-only view (Arrow-backed), which torch warns about
    lower = torch.as_tensor(np.array(box_min), dtype=origins.dtype, device=origins.device)
    upper = torch.as_tensor(np.array(box_max), dtype=origins.dtype, device=origins.device)
    tiny = torch.finfo(directions.dtype).tiny
    sign = torch.where(directions < 0, -1.0, 1.0).to(directions.dtype)
    # Axis-parallel rays: a tiny non-zero component gives +-inf slab bounds instead of NaN.
    safe = torch.where(directions.abs() < tiny, sign * tiny, directions)
    t_lower = (lower - origins) / safe  # (R, 3)
    t_upper = (upper - origins) / safe
    near = torch.minimum(t_lower, t_upper).amax(dim=-1).clamp_min(min_near)  # (R,)
    far = torch.maximum(t_lower, t_upper).amin(dim=-1)
    hit = far > near
    near = torch.where(hit, near, torch.full_like(near, min_near))
    far = torch.where(hit, far, torch.full_like(far, min_near))
    return near, far, hit


def frame_rays(frame: Frame) -> tuple[torch.Tensor, torch.Tensor]:
    """(H*W, 3) origins and unit directions of every pixel of a posed frame, through its lens.

    ``frame``: a :class:`~mclnf_dist.scenes.scene.Frame` or anything with ``c2w``, ``fx``, ``fy``,
    ``cx``, ``cy``, ``width``, ``height`` (and optionally ``distortion``).
    """
    intrinsics = (frame.fx, frame.fy, frame.cx, frame.cy, frame.width, frame.height)
    return camera_rays(frame.c2w, *intrinsics, distortion=getattr(frame, "distortion", None))
