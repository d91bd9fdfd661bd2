"""Rendering rays and whole views through routed modules (Mega-NeRF hard routing).

Every *sample point* is evaluated by the module of the block it falls in, so a ray that crosses
several blocks is rendered by several modules, and the composited colour is exactly what the
stacked modules give together. A chunk of rays is one stacked MLP call: its points are grouped by
module with :func:`mclnf_dist.fields.routing.route` (no Python loop over modules), and memory is
bounded by the chunk, not by the image.
"""

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from mclnf_dist.fields.routing import route
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.nerf.field import (
    RAW_CHANNELS,
    RadianceFieldConfig,
    composite,
    pack_rays,
    sample_points,
)
from mclnf_dist.nerf.rays import frame_rays, near_far_from_box

RouteFn = Callable[[Tensor], Tensor]
"""``route_fn(points (P, 3) world coordinates) -> (P,) int64 module ids``."""


def partition_router(partition) -> RouteFn:
    """A :data:`RouteFn` from a block partition (``route_points(points (P, 3)) -> (P,)`` numpy).

    The block id of a point is its module id (one module per block, in block order).
    """

    def route_fn(points: Tensor) -> Tensor:
        ids = partition.route_points(points.detach().cpu().numpy())
        return torch.as_tensor(ids, dtype=torch.int64, device=points.device)

    return route_fn


def render_rays_routed(
    cfg: RadianceFieldConfig,
    params: Params,
    origins: Tensor,
    directions: Tensor,
    near: Tensor | float,
    far: Tensor | float,
    route_fn: RouteFn,
    chunk: int = 2048,
) -> dict[str, Tensor]:
    """Render rays with every sample point evaluated by the module its block routes it to.

    Samples are jittered when ``cfg.perturb`` (pass ``cfg.for_evaluation()`` for images). Runs
    with autograd as the caller has it (wrap in ``torch.no_grad()`` to render).

    Args:
        cfg: the radiance field.
        params: stacked parameters with ``M`` modules (module ids lie in ``[0, M)``).
        origins, directions: (R, 3) rays (unit directions). near, far: scalars or (R,).
        route_fn: world points (P, 3) -> (P,) module ids.
        chunk: rays per stacked call (``chunk * K`` points, padded per module).

    Returns:
        dict ``rgb`` (R, 3), ``depth`` (R,) world units (not divided by opacity), ``opacity`` (R,).
    """
    num_modules = next(iter(params.values())).shape[0]

    def routed_raw(points: Tensor, directions: Tensor) -> Tensor:
        """(r, K, 3) world points, (r, 3) directions -> (r, K, 4) raw outputs, each point from
        its block's module."""
        flat = points.reshape(-1, 3)
        module_ids = route_fn(flat).to(device=flat.device, dtype=torch.int64)
        inputs = cfg.network_inputs(points, directions).reshape(flat.shape[0], -1)
        batch = route(inputs, module_ids, num_modules)
        raw = cfg.network(params, batch.x)  # (M, width, 4)
        raw = raw.reshape(-1, RAW_CHANNELS)[batch.order]  # (r * K, 4) in input order
        return raw.reshape(*points.shape[:-1], RAW_CHANNELS)

    rays = pack_rays(origins, directions, near, far)  # (R, 8)
    pieces: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    for start in range(0, rays.shape[0], chunk):
        part = rays[start : start + chunk]  # (r, 8)
        t_vals, points = sample_points(cfg, part, routed_raw)  # (r, K), (r, K, 3)
        out = composite(cfg, routed_raw(points, part[:, 3:6]), t_vals, part[:, 7])
        for key, values in pieces.items():
            values.append(out[key])
    if rays.shape[0] == 0:
        empty = rays.new_zeros(0)
        return {"rgb": rays.new_zeros(0, 3), "depth": empty, "opacity": empty}
    return {key: torch.cat(values) for key, values in pieces.items()}


def render_view(
    cfg: RadianceFieldConfig,
    params: Params,
    frame,
    route_fn: RouteFn,
    near: float = 0.0,
    far: float | None = None,
    chunk: int = 2048,
    on_chunk: Callable[[int], None] | None = None,
) -> Tensor:
    """(H, W, 3) rgb of :func:`render_view_outputs` (the image alone)."""
    return render_view_outputs(cfg, params, frame, route_fn, near, far, chunk, on_chunk)["rgb"]


def render_view_outputs(
    cfg: RadianceFieldConfig,
    params: Params,
    frame,
    route_fn: RouteFn,
    near: float = 0.0,
    far: float | None = None,
    chunk: int = 2048,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Tensor]:
    """Render one camera's image through the routed modules (deterministic samples, no grad).

    Ray bounds are the scene box clipped to ``[near, far]``; rays that miss the box show the
    background.

    Args:
        frame: a :class:`~mclnf_dist.scenes.scene.Frame` or anything with ``c2w`` (4, 4), ``fx``,
            ``fy``, ``cx``, ``cy``, ``width``, ``height``.
        near, far: depth range of the scene (``Scene.near``/``Scene.far``); ``far=None``: unbounded.
        on_chunk: called with the number of rays after each chunk (a progress bar).

    Returns:
        dict ``rgb`` (H, W, 3) float32 in [0, 1], ``depth`` (H, W) world units along the ray
        (weighted, not divided by opacity), ``opacity`` (H, W) and ``points`` (H, W, 3), the
        expected ray termination points in world units, on the parameters' device.
    """
    device = next(iter(params.values())).device
    origins, directions = frame_rays(frame)  # (H*W, 3)
    origins, directions = origins.to(device), directions.to(device)
    ray_near, ray_far, _ = near_far_from_box(origins, directions, *cfg.box, min_near=float(near))
    if far is not None:
        ray_far = ray_far.clamp_max(float(far))
        ray_near = torch.minimum(ray_near, ray_far)
    pieces: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    with torch.no_grad():
        for start in range(0, origins.shape[0], chunk):
            part = slice(start, start + chunk)
            out = render_rays_routed(
                cfg.for_evaluation(),
                params,
                origins[part],
                directions[part],
                ray_near[part],
                ray_far[part],
                route_fn,
                chunk,
            )
            for key, values in pieces.items():
                values.append(out[key])
            if on_chunk is not None:
                on_chunk(out["rgb"].shape[0])
    shape = (frame.height, frame.width)
    depth, opacity = torch.cat(pieces["depth"]), torch.cat(pieces["opacity"])
    points = origins + directions * (depth / opacity.clamp_min(1e-6))[:, None]
    return {
        "rgb": torch.cat(pieces["rgb"]).reshape(*shape, 3),
        "depth": depth.reshape(shape),
        "opacity": opacity.reshape(shape),
        "points": points.reshape(*shape, 3),
    }


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """(H, W, 3) float rgb in [0, 1] -> uint8 (H, W, 3) (rounded, clipped); uint8 passes through."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if image.dtype == np.uint8:
        return image
    return (np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
