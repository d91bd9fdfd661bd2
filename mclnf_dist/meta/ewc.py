"""Elastic weight consolidation (EWC) over stacked modules, with the Gauss-Newton Fisher.

EWC keeps a network near the parameters ``theta*`` that solved earlier segments, each parameter
held as firmly as the old segments' predictions depend on it:
``penalty = lambda/2 sum_k F_k (theta_k - theta*_k)^2``.

Which Fisher: the *empirical* Fisher (squared gradients of the loss) vanishes once a segment is
fitted, because every residual does (we measured ~1e-12 per parameter on a fitted signal, and an
EWC that forgot exactly as much as plain fine-tuning). A field's output is a Gaussian with mean
``f(x)``, whose Fisher is the Gauss-Newton matrix ``J^T J``: it depends on how much the
*prediction* moves with a parameter, not on the residual, so it stays large on a fitted segment.
We keep its diagonal, averaged over samples and output channels::

    F_k = mean_i mean_c (d f_c(x_i) / d theta_k)^2

For the MSE loss ``L = mean_i mean_c (f_c(x_i) - y_ic)^2`` the Gauss-Newton Hessian is ``2 F``, so
``lambda = 2`` is EWC's "old loss, quadratically approximated" at face value; the diagonal drops
the strong coupling between a SIREN's weights, so useful strengths are far larger.

How it is computed, without per-sample backward passes: the per-sample gradient of a linear layer
is ``a_i g_i^T`` (layer input ``a_i``, gradient ``g_i`` of ``f_c(x_i)`` at the pre-activation),
and since samples are independent, ONE backward pass of ``sum_i f_c(x_i)`` gives every ``g_i``.
The squared per-sample gradients then sum as ``(a^2)^T (g^2)``: one GEMM per layer and channel,
the cost of an ordinary backward pass (``vmap(grad)`` would hold every sample's gradient at once,
GBs at 4096 rows of a 4x256 SIREN). A radiance field's sample is a ray of ``K`` MLP points, whose
gradient ``sum_s g_s a_s^T`` is formed explicitly for a bounded chunk of rays at a time.
"""

import torch
from torch import Tensor

from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig, Params, forward, layer_names

RAY_GRADIENT_FLOATS = 1 << 22
"""Per-ray weight gradients formed at once (radiance fields): bounds that buffer to 16 MB."""


def fisher_diagonal(
    field: FieldConfig, params: Params, x: Tensor, rows: int, seed: int = 0
) -> Params:
    """Gauss-Newton Fisher diagonal of every module at ``params`` (see the module docstring).

    Args:
        field: a coordinate field (:class:`FieldConfig`) or any field with the same interface
            (:class:`mclnf_dist.nerf.field.RadianceFieldConfig`).
        params: stacked parameters with ``M`` modules.
        x: (M, n, d_in) inputs of the segment, row ``m`` routed to module ``m``.
        rows: at most this many rows (the same random ones for every module) estimate the mean.
        seed: picks the rows.

    Returns:
        ``F`` with the shapes of ``params``: mean over rows and output channels of the squared
        per-sample Jacobian of the predictions.
    """
    if rows < 1:
        raise MclnfError(f"ewc rows must be >= 1, got {rows}")
    n = x.shape[1]
    if n > rows:
        generator = torch.Generator().manual_seed(seed)
        x = x[:, torch.randperm(n, generator=generator)[:rows].to(x.device)]
    modules, used = x.shape[0], x.shape[1]
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    per_call = max(1, field.rows_per_chunk // modules)
    channels = 0
    for start in range(0, used, per_call):
        channels = _accumulate(field, params, x[:, start : start + per_call], fisher)
    return {k: v / (used * channels) for k, v in fisher.items()}


def _accumulate(field: FieldConfig, params: Params, x: Tensor, fisher: Params) -> int:
    """Add ``sum_i sum_c (d f_c(x_i)/d theta)^2`` over the rows of ``x``; return ``C``."""
    cache: list[tuple[Tensor, Tensor]] = []
    prediction = forward(field, params, x, cache)  # (M, r, C)
    pre_activations = [pre for _, pre in cache]
    samples, channels = field.samples_per_item, prediction.shape[-1]
    for channel in range(channels):
        pre_grads = torch.autograd.grad(
            prediction[..., channel].sum(), pre_activations, retain_graph=channel < channels - 1
        )
        for (w, b), (a, _), g in zip(layer_names(params), cache, pre_grads, strict=True):
            a = a.detach()
            if samples == 1:  # a_i g_i^T per row: the squares sum as one GEMM
                fisher[w] += torch.bmm(a.square().transpose(1, 2), g.square())
                fisher[b] += g.square().sum(1, keepdim=True)
            else:
                fisher[w] += _ray_weight_fisher(a, g, samples)
                fisher[b] += g.unflatten(1, (-1, samples)).sum(2).square().sum(1, keepdim=True)
    return channels


def _ray_weight_fisher(a: Tensor, g: Tensor, samples: int) -> Tensor:
    """(M, r*K, in), (M, r*K, out) -> (M, in, out) sum over rays of (sum_s a_s g_s^T)^2."""
    modules, points, fan_in = a.shape
    fan_out = g.shape[-1]
    a = a.unflatten(1, (-1, samples))  # (M, r, K, in)
    g = g.unflatten(1, (-1, samples))  # (M, r, K, out)
    rays = points // samples
    per_chunk = max(1, RAY_GRADIENT_FLOATS // (modules * fan_in * fan_out))
    total = a.new_zeros(modules, fan_in, fan_out)
    for start in range(0, rays, per_chunk):
        part = slice(start, start + per_chunk)
        total += torch.einsum("mrki,mrko->mrio", a[:, part], g[:, part]).square().sum(1)
    return total


class EwcPenalty:
    """Online EWC over stacked modules: one running Fisher diagonal and anchor per module.

    After each segment, :meth:`consolidate` adds that segment's Fisher to the running sum and
    moves the anchor to the current parameters; during the next segments :meth:`add_gradient`
    adds the penalty's gradient ``strength * F * (theta - anchor)`` to the loss gradient.
    """

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self.fisher: Params | None = None
        self.anchor: Params | None = None

    def consolidate(
        self, field: FieldConfig, params: Params, x: Tensor, y: Tensor, rows: int, seed: int = 0
    ) -> None:
        """Add the Fisher diagonal of the segment just learned; anchor at the current params.

        Args:
            x, y: (M, n, d_in), (M, n, C) the segment's rows. The Gauss-Newton Fisher does not
                depend on the targets; ``y`` is checked for shape only.
            rows: rows per module that estimate the Fisher (subsampled when ``n`` is larger).
        """
        if y.shape[:2] != x.shape[:2]:
            raise MclnfError(
                f"ewc targets must have the inputs' (modules, rows) {tuple(x.shape[:2])}, "
                f"got {tuple(y.shape[:2])}"
            )
        fisher = fisher_diagonal(field, params, x, rows, seed)
        if self.fisher is not None:
            fisher = {k: v + self.fisher[k] for k, v in fisher.items()}
        self.fisher = fisher
        self.anchor = {k: v.detach().clone() for k, v in params.items()}

    def add_gradient(self, params: Params, grads: Params) -> Params:
        """``grads`` plus the penalty's gradient (unchanged before the first consolidation)."""
        if self.fisher is None or self.anchor is None:
            return grads
        return {
            k: g + self.strength * self.fisher[k] * (params[k].detach() - self.anchor[k])
            for k, g in grads.items()
        }
