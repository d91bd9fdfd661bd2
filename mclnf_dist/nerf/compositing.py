"""Volume rendering: alpha compositing of samples along rays.

Quadrature: sample ``i`` at depth ``t_i`` stands for the interval ``[t_i, t_{i+1})``, of length
``delta_i``. The last sample's interval ends at ``far`` when ``far`` is given (stratified samples
then tile ``[near, far)`` exactly), else it is :data:`LAST_DELTA` long, i.e. the last sample
extends to infinity as in the original NeRF: a ray whose last sample is inside matter is opaque.

    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = prod_{j < i} (1 - alpha_j)          (transmittance up to sample i)
    w_i     = T_i * alpha_i
    rgb     = sum_i w_i c_i + (1 - sum_i w_i) * background
"""

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
