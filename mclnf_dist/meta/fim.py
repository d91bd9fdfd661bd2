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
from typing import Literal, get_args

import torch
from torch import Tensor

from mclnf_dist.config import NonNegativeFloat, PositiveFloat, UnitFloat
from mclnf_dist.config_rules import cross_field_rule

FimPlacement = Literal["inner", "outer", "both"]
FIM_PLACEMENTS = get_args(FimPlacement)


@dataclass
class FimConfig:
    """Weights ``w_j = m F_j^lambda / sum_k F_k^lambda`` (mean 1), clipped, mixed with uniform."""

    fim_lambda: NonNegativeFloat = 0.0
    """Exponent on the Fisher trace; 0 gives uniform weights, i.e. exactly the MSE loss."""
    beta: UnitFloat = 0.0
    """Mix with uniform weights: ``w <- (1 - beta) w + beta``."""
    w_min: NonNegativeFloat = 0.0
    """Lower clip of a weight (weights have mean 1 before clipping)."""
    w_max: PositiveFloat = 10.0
    """Upper clip of a weight, so a few outliers cannot take over the loss."""
    apply_to: FimPlacement = "inner"
    """Where the weights enter: ``inner`` = the meta-training inner loop and test-time
    adaptation; ``outer`` = only meta-training's outer (query) loss, weights per query sample at
    the adapted parameters (test-time adaptation is then plain MSE); ``both``. Reptile has no
    outer loss, so it accepts only ``inner``."""

    @property
    def is_mse(self) -> bool:
        return self.fim_lambda == 0.0

    @property
    def weights_inner(self) -> bool:
        """The inner loop and test-time adaptation use the FIM loss."""
        return not self.is_mse and self.apply_to in ("inner", "both")

    @property
    def weights_outer(self) -> bool:
        """Meta-training's outer (query) loss uses the FIM loss."""
        return not self.is_mse and self.apply_to in ("outer", "both")


@cross_field_rule(FimConfig)
def clip_order(fim: FimConfig, prefix: str) -> str | None:
    """A clip range with ``w_min >= w_max`` makes every weight the same: the loss is MSE."""
    if fim.w_min < fim.w_max:
        return None
    return (
        f"{prefix}w_min={fim.w_min:g} is not below {prefix}w_max={fim.w_max:g} (every weight "
        "would be clipped to one value, i.e. plain MSE; expected w_min < w_max)"
    )


def fisher_trace(
    cache: list[tuple[Tensor, Tensor]], pre_grads: list[Tensor], samples_per_item: int = 1
) -> Tensor:
    """Per-sample empirical Fisher trace from one backward pass.

    Args:
        cache: per layer ``(a, z)``: input ``(M, n*S, in_l)``, pre-activation ``(M, n*S, out_l)``.
        pre_grads: per layer ``d l_j / d z`` of the *per-sample* losses, ``(M, n*S, out_l)``.
        samples_per_item: ``S`` MLP rows per loss sample (a NeRF ray's points; 1 otherwise).

    Returns:
        (M, n) ``F_j = sum_l ||g_j^l||^2 (||a_j^l||^2 + 1)``; for ``S > 1`` the layer gradient of
        sample ``j`` is ``G = sum_s g_s a_s^T`` and ``||G||^2 = sum_{s,s'} (g_s.g_s')(a_s.a_s')``,
        two small ``S x S`` Gram matrices per sample, plus the bias term ``||sum_s g_s||^2``.
    """
    total = None
    for (a, _), g in zip(cache, pre_grads, strict=True):
        if samples_per_item == 1:
            term = g.square().sum(-1) * (a.square().sum(-1) + 1.0)
        else:
            a = a.reshape(*a.shape[:-2], -1, samples_per_item, a.shape[-1])  # (M, n, S, in)
            g = g.reshape(*g.shape[:-2], -1, samples_per_item, g.shape[-1])  # (M, n, S, out)
            gram = (a @ a.transpose(-1, -2)) * (g @ g.transpose(-1, -2))  # (M, n, S, S)
            term = gram.sum((-1, -2)) + g.sum(-2).square().sum(-1)
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
