"""Rendering rays and whole views through routed modules (Mega-NeRF routing).

Every *sample point* is evaluated by the module of the block it falls in, so a ray that crosses
several blocks is rendered by several modules, and the composited colour is exactly what the
stacked modules give together. A chunk of rays is one stacked MLP call: its points are grouped by
module with :func:`mclnf_dist.fields.routing.route` (no Python loop over modules), and memory is
bounded by the chunk, not by the image.

Blended seams (``cfg.seam_margin > 0``, :func:`blended_fields`): a point near a block boundary is
evaluated by each of its candidate modules in the same stacked call (its row repeated once per
extra candidate) and their activated outputs are blended, so renders show no seam.
"""

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from mclnf_dist.cameras.frame import Frame
from mclnf_dist.fields.routing import route
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.nerf.field import (
    RAW_CHANNELS,
    RadianceFieldConfig,
    activate,
    composite,
    normalise_points,
    pack_rays,
    sample_points,
)
from mclnf_dist.nerf.rays import frame_rays, near_far_from_box

RouteFn = Callable[[Tensor], Tensor]
"""``route_fn(points (P, 3) world coordinates) -> (P,) int64 module ids``."""
BlendFn = Callable[[Tensor, float], tuple[Tensor, Tensor]]
"""``blend_fn(points (P, 3), margin) -> (P, k) int64 module ids, (P, k) weights``: column 0 is the
point's routed module; the weights sum to 1 and are exactly ``(1, 0, ...)`` outside the seams."""
SEAM_DENSITY_EPS = 1e-6
"""Regulariser of the density-weighted colour blend (density per normalised length)."""


class BlockRouter:
    """A :data:`RouteFn` (``router(points) -> module ids``) that also names each point's seam
    candidates (``router.candidates(points, margin)``, a :data:`BlendFn`), which blended
    rendering needs."""

    def __init__(
        self,
        route_fn: RouteFn,
        blend_fn: BlendFn,
        at_time: "Callable[[float], BlockRouter] | None" = None,
    ) -> None:
        self.route_fn, self.blend_fn, self._at_time = route_fn, blend_fn, at_time

    def at_time(self, time: float) -> "BlockRouter":
        """The router of one instant (a time-sliced partition routes a point to the module of
        its block in the time slice of ``time``); itself when time does not matter."""
        return self._at_time(time) if self._at_time is not None else self

    def __call__(self, points: Tensor) -> Tensor:
        return self.route_fn(points)

    def candidates(self, points: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        return self.blend_fn(points, margin)


def partition_router(partition, time: float | None = None) -> BlockRouter:
    """A :class:`BlockRouter` from a block partition (``route_points`` and ``blend_points``), at
    ``time`` (None: the first time slice; :meth:`BlockRouter.at_time` gives another).

    The block id of a point is its module id (one module per block, in block order).
    """
    if partition.time_slices == 1:
        time = None

    def route_fn(points: Tensor) -> Tensor:
        xyz = points.detach().cpu().numpy()
        times = None if time is None else np.full(len(xyz), time)
        ids = partition.route_points(xyz, times)
        return torch.as_tensor(ids, dtype=torch.int64, device=points.device)

    def blend_fn(points: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        ids, weights = partition.blend_points(points.detach().cpu().numpy(), margin)
        if time is not None:  # blend_points names the blocks of the first time slice
            ids = ids + int(partition.time_slice(time, 1)[0])
        ids = torch.as_tensor(ids, dtype=torch.int64, device=points.device)
        return ids, torch.as_tensor(weights, dtype=points.dtype, device=points.device)

    at_time = None if partition.time_slices == 1 else (lambda t: partition_router(partition, t))
    return BlockRouter(route_fn, blend_fn, at_time)


def blended_fields(
    cfg: RadianceFieldConfig,
    params: Params,
    points: Tensor,
    directions: Tensor,
    blend_fn: BlendFn,
    margin: float | None = None,
) -> Tensor:
    """(R, K, 3) world points, (R, 3) directions -> (R, K, 4) activated density and colour,
    blended between a point's seam candidates (``blend_fn(points, margin)``; ``margin``:
    ``cfg.seam_margin`` when None).

    One stacked network call: the points in their routed modules first, then one extra row per
    extra candidate with a nonzero weight (only points in a seam band cost more). Blend of
    candidates ``b`` with weights ``w_b``: density ``sum w_b sigma_b`` (a mixture of the modules'
    media, as Mega-NeRF blends outputs, not logits: blending logits would make a surface that one
    module has and the other lacks fade geometrically, ``exp`` of the mean logit, and vanish at the
    seam), colour ``sum w_b sigma_b c_b / sum w_b sigma_b`` (the emission of the mixture: a
    module's colour where its density is ~0 is untrained and does not tint the other's surface).
    A point with weights ``(1, 0, ...)`` keeps its own module's outputs bit for bit.
    """
    num_modules = next(iter(params.values())).shape[0]
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3)
    count = flat.shape[0]
    ids, weights = blend_fn(flat, cfg.seam_margin if margin is None else margin)
    ids = ids.to(device=flat.device, dtype=torch.int64)
    weights = weights.to(device=flat.device, dtype=flat.dtype)
    inputs = cfg.network_inputs(points, directions).reshape(count, -1)
    rows, cols = torch.nonzero(weights[:, 1:] > 0, as_tuple=True)
    cols = cols + 1
    module_ids = torch.cat([ids[:, 0], ids[rows, cols]])
    batch = route(torch.cat([inputs, inputs[rows]]), module_ids, num_modules)
    raw = cfg.network(params, batch.x).reshape(-1, RAW_CHANNELS)[batch.order]  # (count + Q, 4)
    density, colour = activate(cfg, raw[:count].reshape(*shape, RAW_CHANNELS))
    fields = torch.cat([density[..., None], colour], dim=-1).reshape(count, RAW_CHANNELS)
    if rows.numel():
        extra_density, extra_colour = activate(cfg, raw[count:])  # (Q,), (Q, 3)
        own, extra = weights[:, 0], weights[rows, cols]
        mass = (own * fields[:, 0]).index_add(0, rows, extra * extra_density)  # (count,)
        emitted = ((own * fields[:, 0])[:, None] * fields[:, 1:]).index_add(
            0, rows, (extra * extra_density)[:, None] * extra_colour
        )
        plain = (own[:, None] * fields[:, 1:]).index_add(0, rows, extra[:, None] * extra_colour)
        colour = (emitted + SEAM_DENSITY_EPS * plain) / (mass + SEAM_DENSITY_EPS)[:, None]
        seam = torch.unique(rows)
        blended = torch.cat([mass[seam, None], colour[seam]], dim=-1)
        fields = fields.index_put((seam,), blended)
    return fields.reshape(*shape, RAW_CHANNELS)


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
    with autograd as the caller has it (wrap in ``torch.no_grad()`` to render). With
    ``cfg.seam_margin > 0`` points near block boundaries are blended (:func:`blended_fields`);
    with 0 every point comes from its routed module alone.

    Args:
        cfg: the radiance field.
        params: stacked parameters with ``M`` modules (module ids lie in ``[0, M)``).
        origins, directions: (R, 3) rays (unit directions). near, far: scalars or (R,).
        route_fn: world points (P, 3) -> (P,) module ids; a :class:`BlockRouter` (which
            :func:`partition_router` and the city model's ``module_router`` make) when
            ``cfg.seam_margin > 0``.
        chunk: rays per stacked call (``chunk * K`` points, padded per module).

    Returns:
        dict ``rgb`` (R, 3), ``depth`` (R,) world units (not divided by opacity), ``opacity`` (R,).
    """
    num_modules = next(iter(params.values())).shape[0]

    def routed(network: Callable[[Params, Tensor], Tensor], points: Tensor, inputs: Tensor):
        """Each of the (r, K) points' input rows through its block's module: ``network``'s
        (M, width, ...) outputs back in the points' order, (r, K, ...)."""
        flat = points.reshape(-1, 3)
        module_ids = route_fn(flat).to(device=flat.device, dtype=torch.int64)
        batch = route(inputs.reshape(flat.shape[0], -1), module_ids, num_modules)
        out = network(params, batch.x)  # (M, width, ...)
        out = out.reshape(-1, *out.shape[2:])[batch.order]  # (r * K, ...) in input order
        return out.reshape(*points.shape[:-1], *out.shape[1:])

    def routed_raw(points: Tensor, directions: Tensor) -> Tensor:
        """(r, K, 3) world points, (r, 3) directions -> (r, K, 4) raw outputs."""
        return routed(cfg.network, points, cfg.network_inputs(points, directions))

    def routed_proposal(points: Tensor) -> Tensor:
        """(r, S, 3) world points -> (r, S) proposal densities (hard routing: they only place
        samples, which the blended field then evaluates)."""
        return routed(cfg.proposal_network, points, normalise_points(cfg, points))

    field_fn, activated = routed_raw, False
    if cfg.seam_margin > 0:
        blend_fn = getattr(route_fn, "candidates", None)
        if blend_fn is None:
            raise ValueError(
                "seam_margin > 0 needs a router that knows the blocks' centroids (a BlockRouter: "
                "partition_router or the city model's module_router)"
            )

        def field_fn(points: Tensor, directions: Tensor) -> Tensor:
            return blended_fields(cfg, params, points, directions, blend_fn)

        activated = True

    rays = pack_rays(origins, directions, near, far)  # (R, 8)
    pieces: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    for start in range(0, rays.shape[0], chunk):
        part = rays[start : start + chunk]  # (r, 8)
        t_vals, points = sample_points(cfg, part, field_fn, activated, routed_proposal)
        fields = field_fn(points, part[:, 3:6])
        out = composite(cfg, fields, t_vals, part[:, 7], activated)
        for key, values in pieces.items():
            values.append(out[key])
    if rays.shape[0] == 0:
        empty = rays.new_zeros(0)
        return {"rgb": rays.new_zeros(0, 3), "depth": empty, "opacity": empty}
    return {key: torch.cat(values) for key, values in pieces.items()}


def render_view(
    cfg: RadianceFieldConfig,
    params: Params,
    frame: Frame,
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
    frame: Frame,
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
    if isinstance(route_fn, BlockRouter):  # a time-sliced city: the modules of the frame's time
        route_fn = route_fn.at_time(float(getattr(frame, "time", 0.0)))
    origins, directions = frame_rays(frame)  # (H*W, 3)
    origins, directions = origins.to(device), directions.to(device)
    ray_near, ray_far, _ = near_far_from_box(origins, directions, *cfg.box, min_near=float(near))
    if cfg.contraction:  # the scene goes on beyond the box: the whole [near, far]
        ray_near = torch.full_like(ray_near, float(near))
        ray_far = torch.full_like(ray_far, float(far) if far is not None else 1e4)
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
