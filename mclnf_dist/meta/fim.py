"""The FIM loss: per-sample reconstruction losses weighted by each sample's Fisher information.

For an MLP, sample ``j``'s gradient of layer ``l`` is the outer product ``g_j a_j^T`` of the
layer's input ``a_j`` and the gradient ``g_j`` of its pre-activation, so the empirical Fisher
trace ``F_j = ||grad_theta l_j||^2`` has the closed form (DESIGN section 1)::

    F_j = sum_l ||g_j^l||^2 * (||a_j^l||^2 + 1)          # "+1": the bias

and every ``g_j^l`` comes from ONE backward pass of the summed loss, because sample ``j``'s
backward signal is its own. The same pass also gives the weighted gradient: scaling ``g_j`` by
``w_j`` scales all of sample ``j``'s layer gradients, so ``grad_W = a^T (w * g)``. A FIM step thus
costs one backward pass plus a few norms, not a per-sample backward pass (``bench/fim_overhead``).
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FimConfig:
    """Weights ``w_j = m F_j^lambda / sum_k F_k^lambda`` (mean 1), clipped, mixed with uniform."""

    fim_lambda: float = 0.0
    """Exponent on the Fisher trace; 0 gives uniform weights, i.e. exactly the MSE loss."""
    beta: float = 0.0
    """Mix with uniform weights: ``w <- (1 - beta) w + beta``."""
    w_min: float = 0.0
    """Lower clip of a weight (weights have mean 1 before clipping)."""
    w_max: float = 10.0
    """Upper clip of a weight, so a few outliers cannot take over the loss."""

    @property
    def is_mse(self) -> bool:
        return self.fim_lambda == 0.0


def fisher_trace(cache: list[tuple[Tensor, Tensor]], pre_grads: list[Tensor]) -> Tensor:
    """Per-sample empirical Fisher trace from one backward pass.

    Args:
        cache: per layer ``(a, z)``: input ``(M, n, in_l)`` and pre-activation ``(M, n, out_l)``.
        pre_grads: per layer ``d l_j / d z_j`` of the *per-sample* losses, ``(M, n, out_l)``.

    Returns:
        (M, n) ``F_j = sum_l ||g_j^l||^2 (||a_j^l||^2 + 1)``.
    """
    total = None
    for (a, _), g in zip(cache, pre_grads, strict=True):
        term = g.square().sum(-1) * (a.square().sum(-1) + 1.0)
        total = term if total is None else total + term
    return total


def fim_weights(fisher: Tensor, cfg: FimConfig) -> Tensor:
    """(M, n) Fisher traces -> (M, n) detached weights with mean 1 within each module's batch."""
    fisher = fisher.detach()
    if cfg.is_mse:
        return torch.ones_like(fisher)
    powered = fisher.clamp_min(1e-30).pow(cfg.fim_lambda)
    weights = powered * (fisher.shape[-1] / powered.sum(-1, keepdim=True))
    weights = weights.clamp(cfg.w_min, cfg.w_max)
    return (1.0 - cfg.beta) * weights + cfg.beta
