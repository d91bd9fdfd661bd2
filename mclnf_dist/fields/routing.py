"""Hard routing: every coordinate is evaluated by the module of its segment (as in Mega-NeRF).

Coordinates arrive in any order with a module id each; :func:`route` groups them into a padded
``(M, n_max, d)`` batch (one row per module) so the stacked forward evaluates all modules in one
call, and :func:`routed_forward` scatters the results back to the input order. Modules are added as
segments arrive with :func:`append_modules`; earlier modules are left untouched (frozen).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from mclnf_dist.fields.stacked_mlp import FieldConfig, Params, evaluate


@dataclass
class RoutedBatch:
    """Coordinates grouped by module."""

    x: Tensor
    """(M, n_max, d) coordinates, zero-padded after each module's own rows."""
    mask: Tensor
    """(M, n_max) True where a row holds a real coordinate."""
    order: Tensor
    """(P,) flat index into ``(M * n_max)`` of every input coordinate (to scatter back)."""


def route(coords: Tensor, module_ids: Tensor, num_modules: int) -> RoutedBatch:
    """Group ``coords`` (P, d) by ``module_ids`` (P,) into one padded row per module."""
    if coords.shape[0] and (module_ids.min() < 0 or module_ids.max() >= num_modules):
        raise ValueError(f"module ids must lie in [0, {num_modules}), got {module_ids.unique()}")
    counts = torch.bincount(module_ids, minlength=num_modules)
    width = int(counts.max()) if coords.shape[0] else 0
    sorted_ids, perm = torch.sort(module_ids, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(coords.shape[0], device=coords.device) - starts[sorted_ids]
    slot = torch.empty_like(perm)
    slot[perm] = sorted_ids * width + rank
    x = coords.new_zeros(num_modules * width, coords.shape[1])
    x[slot] = coords
    mask = torch.zeros(num_modules * width, dtype=torch.bool, device=coords.device)
    mask[slot] = True
    return RoutedBatch(x.view(num_modules, width, -1), mask.view(num_modules, width), slot)


def routed_forward(cfg: FieldConfig, params: Params, coords: Tensor, module_ids: Tensor) -> Tensor:
    """(P, d) coordinates, each through its own module -> (P, C) values, in input order."""
    num_modules = next(iter(params.values())).shape[0]
    batch = route(coords, module_ids, num_modules)
    out = evaluate(cfg, params, batch.x)
    return out.reshape(-1, out.shape[-1])[batch.order]


def append_modules(params: Params, new: Params) -> Params:
    """The stack with ``new`` modules appended after the existing (unchanged) ones."""
    if params.keys() != new.keys():
        raise ValueError("appended modules must have the same layers as the stack")
    return {k: torch.cat([params[k].detach(), new[k]]) for k in params}
