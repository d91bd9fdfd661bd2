"""Volume rendering (alpha compositing along rays) and chunked rendering of whole images.

Quadrature: sample ``i`` at depth ``t_i`` stands for the interval ``[t_i, t_{i+1})``, of length
``delta_i``. The last sample's interval ends at ``far`` when ``far`` is given (stratified samples
then tile ``[near, far)`` exactly), else it is :data:`LAST_DELTA` long, i.e. the last sample
extends to infinity as in the original NeRF: a ray whose last sample is inside matter is opaque.

    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = prod_{j < i} (1 - alpha_j)          (transmittance up to sample i)
    w_i     = T_i * alpha_i
    rgb     = sum_i w_i c_i + (1 - sum_i w_i) * background
"""

from collections.abc import Callable

import torch

LAST_DELTA = 1e10
"""Length of the last sample's interval when no ``far`` is given (effectively infinite)."""


def volume_render(
    densities: torch.Tensor,
    colors: torch.Tensor,
    t_vals: torch.Tensor,
    background: torch.Tensor | float | None = None,
    far: torch.Tensor | float | None = None,
) -> dict[str, torch.Tensor]:
    """Composite per-sample densities and colours into per-ray colour, depth and opacity.

    Args:
        densities: (R, S) non-negative volume densities sigma (per unit of depth).
        colors: (R, S, 3) emitted colours.
        t_vals: (R, S) sorted sample depths (distances along unit-direction rays).
        background: colour behind the volume: None (black), a scalar, (3,), or (R, 3).
        far: (R,) or scalar end of the last interval; None means :data:`LAST_DELTA`.

    Returns:
        dict with ``rgb`` (R, 3), ``depth`` (R,) expected depth ``sum_i w_i t_i`` (not normalised
        by opacity, so a transparent ray has depth ~0), ``opacity`` (R,) ``sum_i w_i``, and
        ``weights`` (R, S).
    """
    deltas = t_vals[:, 1:] - t_vals[:, :-1]  # (R, S-1)
    if far is None:
        last = torch.full_like(t_vals[:, :1], LAST_DELTA)
    else:
        far_t = torch.as_tensor(far, dtype=t_vals.dtype, device=t_vals.device)
        last = far_t.reshape(-1, 1).expand(t_vals.shape[0], 1) - t_vals[:, -1:]
    deltas = torch.cat([deltas, last.clamp_min(0.0)], dim=-1)  # (R, S)
    optical_depth = densities * deltas
    alpha = 1.0 - torch.exp(-optical_depth)
    # Transmittance from the exclusive cumulative sum of optical depth: stabler than a cumprod of
    # (1 - alpha) and it never divides by zero.
    accumulated = torch.cumsum(optical_depth, dim=-1)
    before = torch.cat([torch.zeros_like(accumulated[:, :1]), accumulated[:, :-1]], dim=-1)
    transmittance = torch.exp(-before)  # (R, S)
    weights = transmittance * alpha  # (R, S)
    opacity = weights.sum(dim=-1)
    rgb = (weights[..., None] * colors).sum(dim=-2)
    if background is not None:
        bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
        rgb = rgb + (1.0 - opacity)[:, None] * bg
    depth = (weights * t_vals).sum(dim=-1)
    return {"rgb": rgb, "depth": depth, "opacity": opacity, "weights": weights}


def render_image_chunked(
    render_rays_fn: Callable[..., dict[str, torch.Tensor]],
    origins: torch.Tensor,
    directions: torch.Tensor,
    chunk: int = 4096,
    no_grad: bool = True,
    **per_ray: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Render many rays ``chunk`` at a time so peak memory is bounded by the chunk, not the image.

    Args:
        render_rays_fn: ``fn(origins (r, 3), directions (r, 3), **per_ray chunks) -> dict`` of
            tensors whose first dimension is r (e.g. a closure over a field and sampler).
        origins, directions: (..., 3), e.g. (H*W, 3) or (H, W, 3).
        chunk: rays per call.
        no_grad: render without autograd (evaluation); False keeps graphs (costs memory).
        **per_ray: extra (...,)/(..., k) tensors split alongside the rays (times, near, far).

    Returns:
        dict of the outputs concatenated and reshaped to the leading shape of ``origins``
        (``rgb`` (..., 3), ``depth`` (...), ...). Keys whose value is not per ray are dropped.
    """
    lead = origins.shape[:-1]
    flat_o, flat_d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    count = flat_o.shape[0]
    flat_extra = {k: v.reshape(count, *v.shape[len(lead) :]) for k, v in per_ray.items()}
    pieces: dict[str, list[torch.Tensor]] = {}
    with torch.set_grad_enabled(not no_grad and torch.is_grad_enabled()):
        for start in range(0, count, chunk):
            part = slice(start, start + chunk)
            extra = {k: v[part] for k, v in flat_extra.items()}
            out = render_rays_fn(flat_o[part], flat_d[part], **extra)
            rows = flat_o[part].shape[0]
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows:
                    pieces.setdefault(key, []).append(value)
    result = {}
    for key, values in pieces.items():
        if sum(v.shape[0] for v in values) == count:
            joined = torch.cat(values, dim=0)
            result[key] = joined.reshape(*lead, *joined.shape[1:])
    return result
