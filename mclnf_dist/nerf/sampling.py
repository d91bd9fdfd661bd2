"""Depths along rays at which a field is queried: stratified, then hierarchical (inverse CDF).

Sample ``i`` of a ray stands for the interval from its depth to the next sample's depth (the last
one to ``far``), which is how :func:`mclnf_dist.nerf.compositing.volume_render` weights it. With
``perturb=False`` stratified samples sit at the *start* of ``S`` equal bins, so those intervals tile
``[near, far)`` exactly and the quadrature of a constant density is exact; with ``perturb=True``
each sample is uniform in its bin (unbiased training signal, NeRF's "stratified sampling").

The jitter of a run comes from its own generator (:func:`seeded_jitter`), not from torch's global
one: two runs of one configuration and seed draw the same jitter whatever ran before them in the
process (a Ray worker runs many tasks), so their difference is 0, not noise.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_JITTER: ContextVar[torch.Generator | None] = ContextVar("sample_jitter", default=None)


@contextmanager
def seeded_jitter(seed: int) -> Iterator[torch.Generator]:
    """Inside, every sample jitter not given a generator is drawn from one CPU generator seeded
    with ``seed`` (one stream per run; nested uses get their own stream and restore the outer
    one). Yields it, e.g. to checkpoint its state (``get_state``/``set_state``)."""
    generator = torch.Generator().manual_seed(seed)
    token = _JITTER.set(generator)
    try:
        yield generator
    finally:
        _JITTER.reset(token)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) of ``shape`` on ``device``: from ``generator``, else the run's jitter stream
    (:func:`seeded_jitter`, drawn on the CPU), else torch's global generator."""
    source = generator if generator is not None else _JITTER.get()
    if source is None or source.device.type == torch.device(device).type:
        return torch.rand(shape, generator=source, device=device)
    return torch.rand(shape, generator=source, device=source.device).to(device)


def stratified_samples(
    near: torch.Tensor | float,
    far: torch.Tensor | float,
    num_samples: int,
    num_rays: int | None = None,
    perturb: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``num_samples`` sorted depths per ray in ``[near, far)``, one per equal bin.

    Args:
        near, far: (R,) per-ray bounds or scalars (then ``num_rays`` gives R).
        num_samples: S, samples per ray.
        perturb: uniform jitter inside each bin (training); False is deterministic (evaluation).
        generator: random source for the jitter (reproducible runs).

    Returns:
        (R, S) float depths, sorted along each ray.
    """
    near_t = torch.as_tensor(near, dtype=torch.float32)
    far_t = torch.as_tensor(far, dtype=torch.float32)
    if num_rays is None:
        num_rays = max(near_t.numel(), far_t.numel())
    device = near_t.device
    near_t = near_t.to(device).reshape(-1).expand(num_rays)[:, None]  # (R, 1)
    far_t = far_t.to(device).reshape(-1).expand(num_rays)[:, None]
    fractions = torch.arange(num_samples, dtype=torch.float32, device=device) / num_samples
    if perturb:
        jitter = uniform((num_rays, num_samples), generator, device)
        fractions = fractions + jitter / num_samples  # (R, S)
    return near_t + (far_t - near_t) * fractions


def sample_pdf(
    bin_edges: torch.Tensor,
    weights: torch.Tensor,
    num_samples: int,
    perturb: bool = False,
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Draw depths from the piecewise-constant density given by ``weights`` over ``bin_edges``.

    Why: the coarse pass tells where along a ray the mass is; sampling its inverse CDF puts the
    fine samples there (NeRF's hierarchical sampling). ``eps`` is added to every weight so rays
    with no mass (sky) still get samples spread over the whole range.

    Args:
        bin_edges: (R, B+1) sorted edges.
        weights: (R, B) non-negative weight of each bin.
        num_samples: N, samples per ray.
        perturb: random CDF levels (training) instead of evenly spaced ones (deterministic).

    Returns:
        (R, N) sorted depths inside ``[bin_edges[:, 0], bin_edges[:, -1]]``.
    """
    weights = weights.detach() + eps
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf.clamp(max=1.0)], dim=-1)  # (R, B+1)
    rays = weights.shape[0]
    if perturb:
        levels = uniform((rays, num_samples), generator, weights.device)
        levels = (torch.arange(num_samples, device=weights.device) + levels) / num_samples
    else:
        levels = (torch.arange(num_samples, device=weights.device) + 0.5) / num_samples
        levels = levels.expand(rays, num_samples)
    levels = levels.contiguous()
    upper = torch.searchsorted(cdf, levels, right=True).clamp(1, cdf.shape[-1] - 1)  # (R, N)
    lower = upper - 1
    cdf_lo, cdf_hi = cdf.gather(-1, lower), cdf.gather(-1, upper)
    edge_lo, edge_hi = bin_edges.gather(-1, lower), bin_edges.gather(-1, upper)
    span = torch.where(cdf_hi - cdf_lo < eps, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    fraction = ((levels - cdf_lo) / span).clamp(0.0, 1.0)
    return edge_lo + fraction * (edge_hi - edge_lo)


def hierarchical_samples(
    t_vals: torch.Tensor,
    weights: torch.Tensor,
    far: torch.Tensor | float,
    num_samples: int,
    perturb: bool = False,
    generator: torch.Generator | None = None,
    include_coarse: bool = True,
) -> torch.Tensor:
    """Fine depths drawn where the coarse weights are, merged with the coarse ones (sorted).

    Each coarse sample ``i`` owns the interval ``[t_i, t_{i+1})`` (the last one ``[t_S, far)``),
    the same intervals :func:`~mclnf_dist.nerf.compositing.volume_render` uses, so the bins of the
    PDF are exactly the intervals the weights were computed over.

    Args:
        t_vals: (R, S) sorted coarse depths.
        weights: (R, S) coarse rendering weights.
        far: (R,) or scalar far bound.
        num_samples: N fine samples per ray.
        include_coarse: return the union of coarse and fine depths (R, S+N), else fine only.

    Returns:
        (R, S+N) or (R, N) sorted depths.
    """
    far_t = torch.as_tensor(far, dtype=t_vals.dtype, device=t_vals.device)
    far_t = far_t.reshape(-1).expand(t_vals.shape[0])[:, None]
    edges = torch.cat([t_vals, far_t], dim=-1)  # (R, S+1)
    fine = sample_pdf(edges.detach(), weights, num_samples, perturb, generator)
    if not include_coarse:
        return fine
    merged, _ = torch.sort(torch.cat([t_vals.detach(), fine], dim=-1), dim=-1)
    return merged


def interlevel_loss(
    fine_edges: torch.Tensor,
    fine_weights: torch.Tensor,
    coarse_edges: torch.Tensor,
    coarse_weights: torch.Tensor,
    eps: float = 1e-7,
) -> torch.Tensor:
    """(R,) mip-NeRF 360's proposal loss: how far the coarse (proposal) weights fail to bound
    the fine (field) weights from above.

    For every fine interval ``[a, b)`` the bound is the coarse weight of all coarse intervals
    that overlap it; the loss is ``sum max(0, w - bound)^2 / (w + eps)`` over the fine intervals.
    The fine weights are a target (detached): only the proposal learns from this loss.

    Args:
        fine_edges: (R, K+1) sorted edges of the K fine intervals. fine_weights: (R, K).
        coarse_edges: (R, S+1) sorted edges of the S coarse intervals. coarse_weights: (R, S).
    """
    cumulative = torch.cumsum(coarse_weights, dim=-1)
    cumulative = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative], dim=-1)  # (R, S+1)
    last = coarse_edges.shape[-1] - 1
    coarse_edges = coarse_edges.detach().contiguous()
    lower = torch.searchsorted(coarse_edges, fine_edges[:, :-1].detach().contiguous(), right=True)
    upper = torch.searchsorted(coarse_edges, fine_edges[:, 1:].detach().contiguous(), right=False)
    lower, upper = (lower - 1).clamp(0, last), upper.clamp(0, last)
    bound = cumulative.gather(-1, upper) - cumulative.gather(-1, lower)
    target = fine_weights.detach()
    return ((target - bound).clamp_min(0.0).square() / (target + eps)).sum(-1)


def distortion_loss(edges: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(R,) mip-NeRF 360's distortion loss of rendering weights over their intervals: small when
    a ray's weight sits in one compact interval, large when it is spread along the ray (floaters,
    a haze in front of the surface)::

        sum_ij w_i w_j |m_i - m_j|  +  1/3 sum_i w_i^2 (s_{i+1} - s_i)

    with ``m_i`` the interval midpoints in ``s``, each ray's edges mapped linearly onto [0, 1],
    so the loss does not depend on scene units or ray length. The double sum is computed in O(K)
    with prefix sums (the midpoints are sorted).

    Args:
        edges: (R, K+1) sorted edges of the K intervals. weights: (R, K) their weights.
    """
    span = (edges[:, -1:] - edges[:, :1]).clamp_min(1e-12)
    s = (edges - edges[:, :1]) / span
    mids = 0.5 * (s[:, 1:] + s[:, :-1])
    widths = s[:, 1:] - s[:, :-1]
    before = torch.cumsum(weights, dim=-1) - weights  # sum_{j<i} w_j
    moment = torch.cumsum(weights * mids, dim=-1) - weights * mids  # sum_{j<i} w_j m_j
    cross = 2.0 * (weights * (mids * before - moment)).sum(-1)
    return cross + (weights.square() * widths).sum(-1) / 3.0
