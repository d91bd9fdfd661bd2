"""Reconstruction loss, its gradient (MSE or FIM-weighted) and the plain-SGD inner loop.

Parameters are stacked (one module per task, see :mod:`mclnf_dist.fields.stacked_mlp`) and the
loss is the *sum over modules* of each module's mean loss, so the gradient of module ``m`` is the
gradient of its own loss: many tasks adapt in one batched call. Gradients are taken with
``torch.autograd.grad``; with ``create_graph=True`` the adapted parameters stay differentiable
functions of the initialisation, which is second-order MAML.
"""

import torch
from torch import Tensor

from mclnf_dist.fields.stacked_mlp import (
    FieldConfig,
    Params,
    expand_params,
    forward_with_penalty,
    layer_names,
    map_module_chunks,
)
from mclnf_dist.meta.fim import FimConfig, fim_weights, fisher_trace


def per_sample_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """(M, n, C) x2 -> (M, n) squared error averaged over channels (``l_j``)."""
    return (prediction - target).square().mean(-1)


def sample_losses(
    field: FieldConfig,
    params: Params,
    x: Tensor,
    y: Tensor,
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """(M, n) training loss of every sample: its squared error plus the field's own per-sample
    term (a radiance field's proposal loss), the one training loss of every path."""
    errors, penalties = errors_and_penalties(field, params, x, y, cache)
    return errors if penalties is None else errors + penalties


def errors_and_penalties(
    field: FieldConfig,
    params: Params,
    x: Tensor,
    y: Tensor,
    cache: list[tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(M, n) squared errors and the field's (M, n) per-sample loss terms (None: it has none)."""
    prediction, penalties = forward_with_penalty(field, params, x, cache)
    return per_sample_loss(prediction, y), penalties


def query_loss(field: FieldConfig, params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Meta-training's outer loss on a query, in cache-sized module chunks: the mean training
    loss (what is differentiated) and the mean squared error alone (what PSNR is read from)."""

    def chunk(chunk_params: Params, coords: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        errors, penalties = errors_and_penalties(field, chunk_params, coords, target)
        return errors, errors if penalties is None else errors + penalties

    errors, losses = map_module_chunks(chunk, params, x, y, rows_per_chunk=field.rows_per_chunk)
    return losses.mean(), errors.mean()


def loss_and_grads(
    field: FieldConfig,
    params: Params,
    x: Tensor,
    y: Tensor,
    fim: FimConfig | None = None,
    create_graph: bool = False,
    keys: set[str] | None = None,
) -> tuple[Tensor, Params]:
    """Per-module loss and its gradient with respect to ``params`` (or only its ``keys``).

    Args:
        field: the architecture.
        params: stacked parameters, one module per row of ``x`` (``M`` modules).
        x: (M, n, d_in) coordinates. y: (M, n, C) targets.
        fim: FIM-loss options; ``None`` or ``fim_lambda == 0`` is the plain MSE.
        create_graph: keep the graph of the gradient (second-order meta-learning).
        keys: parameter names to differentiate (OML adapts only its head); default all.

    Returns:
        ((M,) loss of each module, gradients with the shapes of ``params``).
    """

    def chunk(chunk_params: Params, coords: Tensor, target: Tensor) -> tuple[Tensor, Params]:
        mse = fim is None or fim.is_mse
        # the FIM weights need every layer's backward signal, so every layer joins the graph
        chunk_params = {
            k: v if v.requires_grad or (mse and keys is not None and k not in keys)
            else v.detach().requires_grad_()
            for k, v in chunk_params.items()
        }  # fmt: skip
        if mse:
            return mse_loss_and_grads(field, chunk_params, coords, target, create_graph, keys)
        return fim_loss_and_grads(field, chunk_params, coords, target, fim, create_graph, keys)

    return map_module_chunks(chunk, params, x, y, rows_per_chunk=field.rows_per_chunk)


def mse_loss_and_grads(
    field: FieldConfig,
    params: Params,
    x: Tensor,
    y: Tensor,
    create_graph: bool,
    keys: set[str] | None = None,
) -> tuple[Tensor, Params]:
    """MSE per module and its gradient by one ordinary backward pass."""
    loss = sample_losses(field, params, x, y).mean(-1)
    names = [k for k in params if keys is None or k in keys]
    grads = torch.autograd.grad(loss.sum(), [params[k] for k in names], create_graph=create_graph)
    return loss, dict(zip(names, grads, strict=True))


def fim_loss_and_grads(
    field: FieldConfig,
    params: Params,
    x: Tensor,
    y: Tensor,
    fim: FimConfig,
    create_graph: bool,
    keys: set[str] | None = None,
) -> tuple[Tensor, Params]:
    """FIM-weighted loss per module and its exact gradient (see ``fim.py``).

    The backward pass goes to the pre-activations only; the weighted weight/bias gradients of the
    linear layers are then ``a^T (w * g)`` and ``sum_j w_j g_j``: the same GEMMs an ordinary
    backward pass would run. Parameters that are no linear layer (a grid field's hash tables,
    appearance codes and proposal network) get theirs from a second backward pass of the weighted
    loss with the weights held constant, so every parameter's gradient is exact.
    """
    cache: list[tuple[Tensor, Tensor]] = []
    losses = sample_losses(field, params, x, y, cache)  # (M, n)
    names = layer_names(params)
    in_layers = {name for pair in names for name in pair}
    others = [k for k in params if k not in in_layers and (keys is None or k in keys)]
    pre_grads = torch.autograd.grad(
        losses.mean(-1).sum(),
        [z for _, z in cache],
        create_graph=create_graph,
        retain_graph=create_graph or bool(others),
    )
    n, samples = x.shape[1], field.samples_per_item
    # pre_grads are of the mean loss; the Fisher trace wants each l_j's own gradient
    fisher = fisher_trace(cache, [g.detach() * n for g in pre_grads], samples)
    weights = fim_weights(fisher, fim)  # (M, n)
    row_weights = weights if samples == 1 else weights.repeat_interleave(samples, dim=1)
    grads: Params = {}
    for (w, b), (a, _), g in zip(names, cache, pre_grads, strict=True):
        if keys is not None and w not in keys:
            continue
        if not create_graph:  # first order: a constant
            a = a.detach()
        weighted = g * row_weights[..., None]
        grads[w] = torch.bmm(a.transpose(1, 2), weighted)
        grads[b] = weighted.sum(1, keepdim=True)
    weighted_loss = (weights * losses).mean(-1)
    if others:
        extra = torch.autograd.grad(
            weighted_loss.sum(),
            [params[k] for k in others],
            create_graph=create_graph,
            allow_unused=True,
        )
        for key, grad in zip(others, extra, strict=True):
            grads[key] = torch.zeros_like(params[key]) if grad is None else grad
    return weighted_loss, grads


def weighted_query_loss(
    field: FieldConfig, params: Params, x: Tensor, y: Tensor, fim: FimConfig
) -> Tensor:
    """(M,) FIM-weighted mean loss of each module on its query (meta-training's outer loss).

    The weights come from the Fisher trace at ``params`` (the adapted parameters) and are detached,
    as in the inner loss, so the outer gradient flows only through the per-sample losses; they
    have mean 1 within each module's query. The Fisher needs the backward signal of every layer:
    one extra backward pass to the pre-activations (graph kept for the outer gradient), sharing
    the forward pass, so a radiance field's jittered samples are the same for weights and loss.

    Args:
        params: adapted parameters, ``M`` modules (or 1, shared), part of the outer graph.
        x: (M, n, d_in) query inputs (packed rays for a radiance field). y: (M, n, C) targets.
    """

    def chunk(chunk_params: Params, coords: Tensor, target: Tensor) -> Tensor:
        cache: list[tuple[Tensor, Tensor]] = []
        losses = sample_losses(field, chunk_params, coords, target, cache)  # (m, n)
        pre_grads = torch.autograd.grad(
            losses.mean(-1).sum(), [z for _, z in cache], retain_graph=True
        )
        n = coords.shape[1]  # pre_grads are of the mean loss; the Fisher wants each l_j's own
        fisher = fisher_trace(cache, [g * n for g in pre_grads], field.samples_per_item)
        return (fim_weights(fisher, fim) * losses).mean(-1)

    return map_module_chunks(chunk, params, x, y, rows_per_chunk=field.rows_per_chunk)


def sgd_adapt(
    field: FieldConfig,
    init: Params,
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float,
    fim: FimConfig | None = None,
    first_order: bool = False,
    adapt_keys: set[str] | None = None,
) -> Params:
    """``steps`` plain-SGD steps from ``init`` for every module (the MAML inner loop).

    Args:
        init: parameters with 1 module (shared, expanded to ``M``) or ``M`` modules.
        x, y: (M, n, d_in), (M, n, C) context of each task.
        first_order: drop second-order terms (FOMAML); the result still depends on ``init``
            through the identity path, which is what FOMAML's meta-gradient uses.
        adapt_keys: the parameter names to adapt (OML adapts only its head); default all.

    Returns:
        Adapted parameters with ``M`` modules.
    """
    params = expand_params(init, x.shape[0]) if _modules(init) != x.shape[0] else dict(init)
    for _ in range(steps):
        _, grads = loss_and_grads(field, params, x, y, fim, not first_order, adapt_keys)
        params = {k: p - lr * grads[k] if k in grads else p for k, p in params.items()}
    return params


def _modules(params: Params) -> int:
    return next(iter(params.values())).shape[0]
