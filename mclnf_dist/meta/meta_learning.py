"""Meta-gradients of the shared initialisation ``theta_0`` (DESIGN section 1) and the outer step.

Three task schedules cover every meta-learned method:

* ``modular`` (``mod``, ``mim``): each (signal, segment) pair is a task; its module starts from
  ``theta_0``, adapts K steps on its segment, and is scored on its segment. All tasks of a
  meta-batch run as one stacked batch.
* ``shared`` (``maml``): each signal is a task for one shared network over all its coordinates.
* ``sequential`` (``oml``): one shared network per signal adapts its head on segment 1, then 2, ...
  (the continual stream), and is scored on everything seen, as in OML.

A city (:func:`block_episode`) is one signal whose segments are blocks: ``modular`` makes every
block a task (which is also MAML's objective there: the blocks are its tasks, so ``maml`` and
``mod`` share one meta-training), ``sequential`` streams the blocks through one network's head.

:func:`meta_gradient` is a pure function of ``theta_0`` and a batch; the one outer loop around it
(:mod:`mclnf_dist.meta.outer_loop`) runs in this process and on distributed workers alike.
"""

import math
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import torch
from torch import Tensor

from mclnf_dist.config import PositiveFloat, PositiveInt, Range
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig, Params, evaluate, layer_names
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.inner_loop import (
    per_sample_loss,
    query_loss,
    sgd_adapt,
    weighted_query_loss,
)

Schedule = Literal["modular", "shared", "sequential"]
SCHEDULES = get_args(Schedule)
Algorithm = Literal["maml", "fomaml", "reptile"]
ALGORITHMS = get_args(Algorithm)


@dataclass
class MetaConfig:
    """Inner and outer loop of meta-training (GradNCP-lineage defaults)."""

    algorithm: Algorithm = "maml"
    """``maml`` (second order), ``fomaml`` (first order) or ``reptile``."""
    inner_steps: PositiveInt = 4
    """K plain-SGD steps per task in the inner loop."""
    inner_lr: PositiveFloat = 1e-2
    """Inner-loop SGD learning rate alpha."""
    outer_lr: PositiveFloat = 1e-4
    """Outer Adam learning rate (DESIGN: 1e-5 for large models; small models want more)."""
    outer_steps: PositiveInt = 300
    """The meta budget: outer updates (a meta-batch of signals each; in the city one synchronous
    round of the Train workers). Sweeps' schedulers count in it. The city's budget is chosen on
    validation views in ``docs/results/defaults/city.md``."""
    meta_batch_size: PositiveInt = 8
    """Signals per meta-batch (each contributes one task per segment when modular)."""
    rows_per_segment: Annotated[int, Range(ge=1, special=((0, "all rows"),))] = 0
    """Signals: random rows (coordinates) of every segment per meta-batch, the same rows for the
    inner and the outer loss; bounds a meta-step's cost on large signals. 0: every row."""
    grad_clip: PositiveFloat = 1.0
    """Outer gradient-norm clip."""
    head_layers: PositiveInt = 2
    """``oml`` only: the last layers adapted in the inner loop (the rest is the representation)."""
    init_from: str = ""
    """Start from a ``theta_0`` learned elsewhere instead of meta-training: a ``theta0-*.pt``
    an earlier city run wrote, a folder holding it, an ``s3://`` URI, or ``mlflow:<run id>``."""


def head_keys(params: Params, head_layers: int) -> set[str]:
    """Parameter names of the last ``head_layers`` layers (OML's prediction network)."""
    names = layer_names(params)
    return {key for layer in names[-head_layers:] for key in layer}


def tasks_for(schedule: str, coords: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Arrange a batch as stacked tasks.

    Args:
        coords: (T, n, d) segment coordinates. values: (B, T, n, C) the signals' segments.

    Returns:
        ``modular``: x (B*T, n, d), y (B*T, n, C); ``shared``: x (B, T*n, d), y (B, T*n, C).
    """
    batch, segments, n, channels = values.shape
    if schedule == "modular":
        x = coords.expand(batch, *coords.shape).reshape(batch * segments, n, -1)
        return x, values.reshape(batch * segments, n, channels)
    x = coords.reshape(1, segments * n, -1).expand(batch, -1, -1)
    return x, values.reshape(batch, segments * n, channels)


@dataclass
class Episode:
    """The tasks of one meta-batch, stacked: context stages in arrival order, then a query.

    ``modular``/``shared`` episodes (and a NeRF block batch) have one context stage; a
    ``sequential`` (OML) episode has one per segment and adapts only ``adapt_keys``.
    """

    context: list[tuple[Tensor, Tensor]]
    """Per stage: x (M, n, d_in), y (M, n, C)."""
    query: tuple[Tensor, Tensor]
    """x (M, n_q, d_in), y (M, n_q, C): what the adapted tasks are scored on."""
    adapt_keys: set[str] | None = None


def signal_episode(
    schedule: str, meta: MetaConfig, theta0: Params, coords: Tensor, values: Tensor
) -> Episode:
    """An episode of signals: coords (T, n, d) and values (B, T, n, C) -> stacked tasks."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (expected one of {SCHEDULES})")
    if schedule == "sequential":
        stages = [
            (coords[i].expand(values.shape[0], -1, -1), values[:, i])
            for i in range(coords.shape[0])
        ]
        query = tasks_for("shared", coords, values)
        return Episode(stages, query, head_keys(theta0, meta.head_layers))
    x, y = tasks_for(schedule, coords, values)
    return Episode([(x, y)], (x, y))


def block_episode(
    schedule: str, meta: MetaConfig, theta0: Params, x: Tensor, y: Tensor, n: int
) -> Episode:
    """An episode of a city's blocks: x (B, 2n, d), y (B, 2n, C) rays of B blocks; the first ``n``
    rays of each block adapt, the other ``n`` score.

    ``modular``: every block a task with its own copy of ``theta_0`` (one stacked stage).
    ``sequential`` (OML): one network adapts its head on block 1, then 2, ..., and is scored on
    the query rays of all of them.
    """
    if schedule == "modular":
        return Episode([(x[:, :n], y[:, :n])], (x[:, n:], y[:, n:]))
    if schedule != "sequential":
        raise ValueError(f"unknown block schedule {schedule!r} (expected modular or sequential)")
    stages = [(x[b : b + 1, :n], y[b : b + 1, :n]) for b in range(x.shape[0])]
    query = (x[:, n:].reshape(1, -1, x.shape[-1]), y[:, n:].reshape(1, -1, y.shape[-1]))
    return Episode(stages, query, head_keys(theta0, meta.head_layers))


def adapt_episode(
    field: FieldConfig,
    meta: MetaConfig,
    fim: FimConfig | None,
    theta0: Params,
    episode: Episode,
    first_order: bool,
) -> Params:
    """Run the inner loop through every context stage; return the adapted stacked params.

    The inner loss is FIM-weighted only when ``fim.apply_to`` is ``inner`` or ``both``."""
    inner_fim = fim if fim is not None and fim.weights_inner else None
    params = theta0
    for x, y in episode.context:
        params = sgd_adapt(
            field,
            params,
            x,
            y,
            meta.inner_steps,
            meta.inner_lr,
            inner_fim,
            first_order,
            adapt_keys=episode.adapt_keys,
        )
    return params


def meta_gradient(
    field: FieldConfig,
    meta: MetaConfig,
    fim: FimConfig | None,
    theta0: Params,
    episode: Episode,
) -> tuple[Params, dict[str, float]]:
    """Gradient of the outer loss with respect to ``theta_0`` for one episode.

    The outer loss is the query MSE, or with ``fim.apply_to`` ``outer``/``both`` the FIM-weighted
    query loss (:func:`~mclnf_dist.meta.inner_loop.weighted_query_loss`).

    Args:
        field: the field (a coordinate field or a radiance field).
        fim: the FIM loss of a ``mim``-like method; ``None``: MSE everywhere.
        theta0: one-module parameters (leaf tensors or not; they are detached here).
        episode: the stacked tasks (:func:`signal_episode`, or a NeRF block batch).

    Returns:
        (gradient with ``theta0``'s shapes, metrics ``outer_loss``, ``outer_psnr``). For Reptile
        the "gradient" is ``mean_tasks(theta_0 - theta_K)``, which Adam then follows.
    """
    if meta.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown meta algorithm {meta.algorithm!r} (expected {ALGORITHMS})")
    check_fim_placement(meta, fim)
    reptile = meta.algorithm == "reptile"
    init = {k: v.detach().requires_grad_(not reptile) for k, v in theta0.items()}
    x, y = episode.query
    if reptile:
        adapted = adapt_episode(field, meta, fim, init, episode, first_order=True)
        adapted = {k: v.detach() for k, v in adapted.items()}
        with torch.no_grad():
            loss = per_sample_loss(evaluate(field, adapted, x), y).mean()
        grads = {k: (init[k] - adapted[k]).mean(0, keepdim=True) for k in init}
    else:
        first_order = meta.algorithm == "fomaml"
        adapted = adapt_episode(field, meta, fim, init, episode, first_order)
        if fim is not None and fim.weights_outer:
            loss = error = weighted_query_loss(field, adapted, x, y, fim).mean()
        else:
            loss, error = query_loss(field, adapted, x, y)
        grads = dict(zip(init, torch.autograd.grad(loss, list(init.values())), strict=True))
    value = float(error.detach()) if not reptile else float(loss)
    return grads, {"outer_loss": value, "outer_psnr": mse_to_psnr(value)}


def check_fim_placement(meta: MetaConfig, fim: FimConfig | None) -> None:
    """Reptile follows ``theta_0 - theta_K`` and has no outer loss to weight: refuse
    ``fim.apply_to`` ``outer``/``both`` with it rather than silently ignore the weights."""
    if meta.algorithm == "reptile" and fim is not None and fim.weights_outer:
        raise MclnfError(
            f"fim.apply_to={fim.apply_to!r} needs an outer loss, which meta.algorithm='reptile' "
            "does not have (expected fim.apply_to='inner', or meta.algorithm maml or fomaml)"
        )


def meta_problem(
    meta: MetaConfig, fim: FimConfig, depth: int, methods: tuple[str, ...], prefix: str = ""
) -> str | None:
    """A job's cross-field rule on its ``meta``, ``fim`` and field ``depth`` (fields named with
    ``prefix``): OML's head must leave a representation below it (``head_layers < depth``, or it
    adapts everything), and Reptile takes no outer-loss FIM weights."""
    if "oml" in methods and meta.head_layers >= depth:
        return (
            f"{prefix}meta.head_layers={meta.head_layers} is not below the field's depth {depth} "
            f"(OML would adapt every layer; expected head_layers <= {depth - 1})"
        )
    if meta.algorithm == "reptile" and fim.weights_outer:
        return (
            f"{prefix}fim.apply_to={fim.apply_to!r} needs an outer loss, which "
            f"{prefix}meta.algorithm='reptile' does not have (expected apply_to='inner', or "
            "algorithm maml or fomaml)"
        )
    return None


def mse_to_psnr(mse: float | Tensor) -> float | Tensor:
    """PSNR in dB of values in [0, 1], capped at 120 dB (an MSE floor of 1e-12): the one PSNR
    formula every score uses."""
    if isinstance(mse, Tensor):
        return -10.0 * torch.log10(mse.clamp_min(1e-12))
    return -10.0 * math.log10(max(float(mse), 1e-12))


class OuterOptimizer:
    """``theta_0`` plus its outer Adam: applies (averaged) meta-gradients with norm clipping.

    Kept separate from the gradient computation so a parameter server can own it.
    """

    def __init__(self, theta0: Params, lr: float, grad_clip: float) -> None:
        self.theta0 = {k: v.detach().clone().requires_grad_(True) for k, v in theta0.items()}
        self.grad_clip = grad_clip
        self.optimizer = torch.optim.Adam(list(self.theta0.values()), lr=lr)

    def step(self, grads: Params) -> float:
        """Apply one meta-gradient; returns its norm before clipping."""
        for key, param in self.theta0.items():
            param.grad = grads[key].to(param.device, param.dtype)
        norm = torch.nn.utils.clip_grad_norm_(list(self.theta0.values()), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def params(self) -> Params:
        return {k: v.detach().clone() for k, v in self.theta0.items()}

    def state_dict(self) -> dict:
        return {"theta0": self.params(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for key, value in state["theta0"].items():
                self.theta0[key].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
