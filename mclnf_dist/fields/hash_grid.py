"""Multi-resolution hash encoding (Mueller et al. 2022) stacked over modules.

Every module owns one table per level; the tables of all modules are one tensor::

    tables: (M, L, 2^T, F)       M modules, L levels, 2^T entries per level, F features

so ``M`` modules encode their points in one batched call. A point ``x`` in ``[0, 1]^3`` (each
module's own box, normalised by the caller) is, at level ``l`` with resolution ``R_l`` cells per
axis, inside the cell whose lower corner is ``c = floor(x R_l)`` (clamped to ``R_l - 1``, so a point
at exactly 1 lies in the last cell with weight 1 on its upper face). Its feature is the trilinear
blend of the ``8`` corner entries ``c + {0, 1}^3``. A corner's entry is

- dense, ``c_x + c_y (R_l + 1) + c_z (R_l + 1)^2``, while the level's ``(R_l + 1)^3`` vertices fit
  in the table (coarse levels: no collisions, the rest of the table unused), as instant-ngp does;
- hashed otherwise: ``(c_x * 1) xor (c_y * 2654435761) xor (c_z * 805459861)`` modulo ``2^T``.

Resolutions grow geometrically, ``R_l = floor(R_0 b^l)`` with ``b`` such that ``R_{L-1}`` is the
finest resolution. Dense levels are the coarse ones (a prefix), so the levels run as two groups.

Execution (measured in ``bench/hash_grid.py``, 2 CPU cores): both index formulas separate per
axis, so the 8 corner indices are a broadcast of three ``(..., 2)`` per-axis terms (``+`` or
``xor``; the primes reduced modulo ``2^T`` first, the table offset folded into the z term); the
terms in int32 while they fit, the indices int64 (``index_add`` on int32 indices is 5x slower).
Indices are level-major, ``(M, L, N, 8)``, so consecutive lookups stay in one level's 4 MB
table (1.7x faster than point-major). All corners of all levels and modules are then ONE fused
gather-and-blend, ``embedding_bag`` with the trilinear weights as per-sample weights, and one
``index_add`` backward (:class:`GatherBlend`); no ``(M, N, L, 8, F)`` tensor exists in the
forward pass.
"""

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from mclnf_dist.config import PositiveFloat, PositiveInt, Range

PRIMES = (1, 2654435761, 805459861)
"""instant-ngp's spatial-hash primes of the x, y and z coordinates."""
CORNERS = 8


@dataclass
class HashGridConfig:
    """A multi-resolution hash grid: ``levels * features_per_level`` features per point."""

    levels: PositiveInt = 16
    """L: number of resolution levels (instant-ngp: 16)."""
    log2_table_size: Annotated[int, Range(ge=4, le=24)] = 19
    """T: each level's table holds 2^T entries (instant-ngp: 19; 2^19 x 16 x 2 = 16.8 M floats)."""
    features_per_level: PositiveInt = 2
    """F: features per table entry (instant-ngp: 2)."""
    base_resolution: PositiveInt = 16
    """Cells per axis of the coarsest level (instant-ngp: 16)."""
    finest_resolution: PositiveInt = 2048
    """Cells per axis of the finest level (instant-ngp: 512 to 524288 by scene; 2048 for a box)."""
    init_scale: PositiveFloat = 1e-4
    """Tables start uniform in [-init_scale, init_scale] (instant-ngp: 1e-4)."""

    @property
    def table_size(self) -> int:
        return 1 << self.log2_table_size

    @property
    def output_features(self) -> int:
        """L * F: width of the encoding."""
        return self.levels * self.features_per_level


def level_resolutions(cfg: HashGridConfig) -> list[int]:
    """Cells per axis of every level, ``floor(base * b^l)``, from base to finest resolution."""
    if cfg.finest_resolution < cfg.base_resolution:
        raise ValueError(
            f"finest_resolution ({cfg.finest_resolution}) must be >= base_resolution "
            f"({cfg.base_resolution})"
        )
    if cfg.levels == 1:
        return [cfg.base_resolution]
    growth = math.exp(
        (math.log(cfg.finest_resolution) - math.log(cfg.base_resolution)) / (cfg.levels - 1)
    )
    # The epsilon keeps exact powers (e.g. 16 * 2^7 = 2048) from rounding down to 2047.
    return [math.floor(cfg.base_resolution * growth**level + 1e-6) for level in range(cfg.levels)]


def is_hashed(resolution: int, table_size: int) -> bool:
    """A level hashes when its (R + 1)^3 grid vertices exceed the table, else indexes densely."""
    return (resolution + 1) ** 3 > table_size


def axis_multipliers(resolution: int, table_size: int) -> tuple[int, int, int]:
    """What each axis' integer coordinate is multiplied by: dense strides or the hash primes."""
    if is_hashed(resolution, table_size):
        return tuple(p % table_size for p in PRIMES)  # the products' low T bits are unchanged
    return (1, resolution + 1, (resolution + 1) ** 2)


def init_hash_tables(
    cfg: HashGridConfig,
    num_modules: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(M, L, 2^T, F) tables, uniform in [-init_scale, init_scale] (instant-ngp)."""
    shape = (num_modules, cfg.levels, cfg.table_size, cfg.features_per_level)
    tables = torch.rand(shape, generator=generator) * (2 * cfg.init_scale) - cfg.init_scale
    return tables.to(device)


def corner_indices_and_weights(
    cfg: HashGridConfig, points: Tensor, num_tables: int | None = None
) -> tuple[Tensor, Tensor]:
    """The 8 corner entries and trilinear weights of every point at every level.

    Args:
        cfg: the grid. points: (M, N, 3) in [0, 1]^3 (clamped).
        num_tables: modules in the tables the indices point into: ``M`` (module ``m``'s rows
            index its own tables), 1 (one table set shared by every module) or None (indices
            within each level's table, in ``[0, 2^T)``).

    Returns:
        (M, L, N, 8) int64 indices into the tables flattened to ``(num_tables * L * 2^T, F)``
        (or into each level's table), and (M, L, N, 8) trilinear weights (summing to 1 per
        level). Corner ``4 i + 2 j + k`` is the cell's lower corner plus ``(i, j, k)``. Levels
        come before points so that consecutive lookups stay in one level's table (cache).
    """
    modules, device = points.shape[0], points.device
    size, levels = cfg.table_size, cfg.levels
    resolutions = level_resolutions(cfg)
    res = torch.tensor(resolutions, dtype=points.dtype, device=device)[:, None, None]  # (L,1,1)
    pos = points.clamp(0.0, 1.0)[:, None] * res  # (M, L, N, 3)
    cell = torch.minimum(pos.floor(), res - 1)  # a point at 1 is in the last cell
    frac = pos - cell  # (M, L, N, 3) in [0, 1]
    weights = torch.stack([1.0 - frac, frac], dim=-1)  # (M, L, N, 3, 2)
    wx, wy, wz = weights.unbind(-2)  # (M, L, N, 2) each
    weight = (wx[..., :, None] * wy[..., None, :])[..., None] * wz[..., None, None, :]

    # Per-axis terms of the lower and upper corner, reduced modulo 2^T (a no-op for dense
    # levels, whose terms stay below (R + 1)^3 <= 2^T), with the table offset put in z's term:
    # the offset is a multiple of 2^T and the other terms are below 2^T, so + and xor keep it.
    multipliers = [axis_multipliers(r, size) for r in resolutions]
    # The per-axis products stay below (R + 1) * 2^T: int32 then (half the memory traffic of
    # int64 on these memory-bound passes), int64 only for the final indices (index_add's).
    narrow = (resolutions[-1] + 1) * size < 2**31
    term_type = torch.int32 if narrow else torch.int64
    mult = torch.tensor(multipliers, dtype=term_type, device=device)[:, None]  # (L, 1, 3)
    low = cell.to(term_type) * mult
    terms = torch.stack([low, low + mult], dim=-1) & (size - 1)  # (M, L, N, 3, 2)
    tx, ty, tz = terms.unbind(-2)  # (M, L, N, 2) each
    tz = tz.to(torch.int64)  # the last term makes the int64 indices (type promotion)
    if num_tables is not None:
        offset = torch.arange(levels, dtype=torch.int64, device=device) * size  # (L,)
        if num_tables > 1:
            module = torch.arange(modules, dtype=torch.int64, device=device) * (levels * size)
            offset = offset + module[:, None]  # (M, L)
        tz = tz + offset[..., None, None]
    index = torch.empty(*tx.shape[:-1], 2, 2, 2, dtype=torch.int64, device=device)
    dense = sum(not is_hashed(r, size) for r in resolutions)  # dense levels come first
    for group, combine in ((slice(0, dense), torch.add), (slice(dense, levels), torch.bitwise_xor)):
        xy = combine(tx[:, group, ..., :, None], ty[:, group, ..., None, :])  # (M, G, N, 2, 2)
        combine(xy[..., None], tz[:, group, ..., None, None, :], out=index[:, group])
    return index.flatten(-3), weight.flatten(-3)


class GatherBlend(torch.autograd.Function):
    """``out[r] = sum_c weight[r, c] * table_rows[index[r, c]]`` with an ``index_add`` backward.

    The forward is ``embedding_bag`` (gather and weighted sum fused: 5x faster on CPU than
    ``index_select`` + ``bmm``, and no ``(R, 8, F)`` tensor); its own backward is 3x slower than
    ``index_add`` and not twice differentiable, hence this backward, made of differentiable
    operations (second-order MAML goes through it). No gradient flows to the weights.
    """

    @staticmethod
    def forward(ctx, tables: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        """tables: (..., F), index: (R, 8) int64 rows of ``tables.reshape(-1, F)``, weight:
        (R, 8) -> (R, F)."""
        rows = tables.reshape(-1, tables.shape[-1])
        ctx.save_for_backward(index, weight)
        ctx.table_shape = tables.shape
        return F.embedding_bag(index, rows, mode="sum", per_sample_weights=weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        index, weight = ctx.saved_tensors
        features = ctx.table_shape[-1]
        per_corner = weight[:, :, None] * grad[:, None, :]  # (R, 8, F); bmm of 1x1 tiles is slower
        grad_rows = grad.new_zeros(ctx.table_shape.numel() // features, features)
        target, source = as_pairs(grad_rows), as_pairs(per_corner.reshape(-1, features))
        target.index_add_(0, index.view(-1), source)  # in place: no copy
        return grad_rows.view(ctx.table_shape), None, None


def as_pairs(rows: Tensor) -> Tensor:
    """(R, F) float32/64 rows -> the same memory as (R, F / 2) complex numbers when F is even,
    else ``rows`` unchanged. Why: ``index_add_`` scatters a complex number (two floats, added
    componentwise, so the sums are bit for bit the same) as one element: 1.7x faster on CPU
    for F = 2 than scattering two-float rows (``bench/hash_grid.py``). A view: differentiable
    (second-order MAML goes through the backward)."""
    features = rows.shape[-1]
    if features % 2 or rows.dtype not in (torch.float32, torch.float64):
        return rows
    return torch.view_as_complex(rows.view(rows.shape[0], features // 2, 2))


def hash_encode(cfg: HashGridConfig, tables: Tensor, points: Tensor) -> Tensor:
    """Encode points with every module's own tables in one gather.

    Args:
        cfg: the grid. tables: (M, L, 2^T, F), or (1, L, 2^T, F) shared by every module.
        points: (M, N, 3) in [0, 1]^3 (clamped), row ``m`` encoded by module ``m``. No
            gradient flows to the points.

    Returns:
        (M, N, L * F) features, level-major (level 0's F features first).
    """
    modules, count = points.shape[0], points.shape[1]
    levels, features = cfg.levels, cfg.features_per_level
    expected = (levels, cfg.table_size, features)
    if tables.shape[1:] != expected or tables.shape[0] not in (1, modules):
        raise ValueError(f"tables of shape {tuple(tables.shape)}, expected (M, *{expected})")
    with torch.no_grad():
        index, weight = corner_indices_and_weights(cfg, points, tables.shape[0])
    encoded = GatherBlend.apply(tables, index.view(-1, CORNERS), weight.view(-1, CORNERS))
    encoded = encoded.view(modules, levels, count, features).transpose(1, 2)  # (M, N, L, F)
    return encoded.reshape(modules, count, levels * features)
