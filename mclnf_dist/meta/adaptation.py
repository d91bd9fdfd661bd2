"""Test-time adaptation of stacked parameters: the one optimiser plan every method uses.

A fair comparison gives every method the same plan: the same optimiser schedule, the
same rows per signal per step and the same step budget, so methods differ only in their init,
modularity and loss. The plan is one per modality, chosen on validation signals
(:mod:`mclnf_dist.sweeps.plan_selection`) and recorded in the recipes: ``sgd_steps`` plain-SGD
steps at the inner-loop rate (the regime a meta-learned ``theta_0`` was trained for), then Adam.
Continual baselines add their regulariser here: EWC's quadratic penalty (as a gradient term,
:mod:`mclnf_dist.meta.ewc`) and experience replay (extra rows of earlier segments).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from mclnf_dist.config import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    UnitFloat,
)
from mclnf_dist.config_rules import cross_field_rule
from mclnf_dist.fields.stacked_mlp import FieldConfig, Params
from mclnf_dist.meta.ewc import EwcPenalty
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.inner_loop import loss_and_grads


@dataclass
class AdaptConfig:
    """Test-time optimisation: one plan (schedule, rows per step, budget) for every method."""

    max_steps: PositiveInt = 4096
    """Adaptation steps per segment; PSNR is recorded at 1, 2, 4, ... up to this."""
    adam_lr: PositiveFloat = 1e-3
    """Adam learning rate after the SGD steps (every method)."""
    sgd_steps: NonNegativeInt = 0
    """Every method's first steps: plain SGD at the inner-loop rate ``meta.inner_lr`` (the regime
    a meta-learned init was trained for), then Adam; 0: Adam from the first step."""
    ewc_lambda: NonNegativeFloat = 10.0
    """Strength of EWC's penalty ``lambda/2 sum_k F_k (theta_k - theta*_k)^2`` with the
    Gauss-Newton Fisher (:mod:`mclnf_dist.meta.ewc`). Chosen on validation data, for ``ewc``
    at each modality's plan, over 0.01..100 (``mclnf choose-plan --recipe <modality>-quick
    --search.methods ewc --search.ewc-lambdas 0.01 0.1 1 10 100``): 10 won on faces, photos,
    audio and video, inside the grid (``docs/results/plans/*-ewc.json``)."""
    ewc_rows: PositiveInt = 2048
    """Rows per module (random, the same for all) that estimate EWC's Fisher after a segment;
    its cost is C backward passes over these rows, so it stays bounded on large signals."""
    replay_fraction: UnitFloat = 0.25
    """Fraction of each earlier segment's coordinates replayed with every later step."""
    batch_size: Annotated[int, Range(ge=1, special=((0, "all rows"),))] = 0
    """Rows (coordinates, rays) per signal per step, drawn at random, whatever the method: a
    one-network method takes them all, each of T modules (or a sequential method, on its current
    segment) ``batch_size // T``; 0: every row every step."""


@cross_field_rule(AdaptConfig)
def sgd_within_budget(adapt: AdaptConfig, prefix: str) -> str | None:
    if adapt.sgd_steps <= adapt.max_steps:
        return None
    return (
        f"{prefix}sgd_steps={adapt.sgd_steps} is more than {prefix}max_steps={adapt.max_steps} "
        "(the SGD steps are the first of the budget; expected sgd_steps <= max_steps)"
    )


@dataclass
class OptimiserPlan:
    """SGD for the first ``sgd_steps`` at ``sgd_lr``, then Adam at ``adam_lr``."""

    sgd_steps: int
    sgd_lr: float
    adam_lr: float


def adapt(
    field: FieldConfig,
    init: Params,
    x: Tensor,
    y: Tensor,
    steps: int,
    plan: OptimiserPlan,
    fim: FimConfig | None = None,
    trainable: set[str] | None = None,
    ewc: EwcPenalty | None = None,
    on_step: Callable[[int, Params], None] | None = None,
    batch_size: int = 0,
    seed: int = 0,
) -> Params:
    """Optimise every module for ``steps`` steps on its own rows.

    Args:
        init: parameters with ``M`` modules (copied, never modified).
        x, y: (M, n, d_in) and (M, n, C).
        trainable: names of the parameters to train (default: all).
        on_step: called as ``on_step(step, params)`` after steps 1..steps (recording curves).
        batch_size: rows per step (the same random rows for every module); 0: all rows.

    Returns:
        The adapted parameters (detached).
    """
    params = {k: v.detach().clone().requires_grad_() for k, v in init.items()}
    keys = list(params) if trainable is None else [k for k in params if k in trainable]
    adam = torch.optim.Adam([params[k] for k in keys], lr=plan.adam_lr)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    rows = x.shape[1]
    for step in range(1, steps + 1):
        batch_x, batch_y = x, y
        if 0 < batch_size < rows:
            pick = torch.randint(0, rows, (batch_size,), generator=generator, device=x.device)
            batch_x, batch_y = x[:, pick], y[:, pick]
        _, grads = loss_and_grads(field, params, batch_x, batch_y, fim, keys=trainable)
        if ewc is not None:
            grads = ewc.add_gradient(params, grads)
        if step <= plan.sgd_steps:
            with torch.no_grad():
                for key in keys:
                    params[key] -= plan.sgd_lr * grads[key]
        else:
            for key in keys:
                params[key].grad = grads[key]
            adam.step()
        if on_step is not None:
            on_step(step, params)
    return {k: v.detach() for k, v in params.items()}
