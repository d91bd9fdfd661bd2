"""Coordinate grids and their cut into equal segments, for any number of dimensions.

One function serves every modality: an image (H, W) cut by (2, 2) gives the four quadrants, audio
(L,) cut by (T,) gives time chunks, and video (F, H, W) cut by (ft, gh, gw) gives spatio-temporal
chunks. The first grid dimension varies slowest, so video segments arrive in time order.
"""

import math

import torch
from torch import Tensor

from mclnf_dist.errors import MclnfError


def check_splits(grid_shape: tuple[int, ...], splits: tuple[int, ...]) -> None:
    """Raise :class:`MclnfError` unless ``splits`` cuts ``grid_shape`` into equal whole pieces."""
    if len(splits) != len(grid_shape):
        raise MclnfError(
            f"splits {tuple(splits)} has {len(splits)} entries but the grid {tuple(grid_shape)} "
            f"has {len(grid_shape)} dimensions (expected one split per dimension)"
        )
    for dim, (size, split) in enumerate(zip(grid_shape, splits, strict=True)):
        if split < 1 or size < 1 or size % split != 0:
            raise MclnfError(
                f"grid {tuple(grid_shape)} cannot be cut by splits {tuple(splits)}: dimension "
                f"{dim} has size {size}, expected a positive multiple of {split}"
            )


def grid_coords(grid_shape: tuple[int, ...]) -> Tensor:
    """Coordinates of the sample centres of a grid, each axis spanning [-1, 1].

    Args:
        grid_shape: (n_0, ..., n_{d-1}).

    Returns:
        (N, d) float32, N = prod(grid_shape), row-major (last axis fastest); column k is axis k.
    """
    axes = [torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1) for n in grid_shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1).to(torch.float32)


def grid_segments(grid_shape: tuple[int, ...], splits: tuple[int, ...]) -> Tensor:
    """Flat coordinate indices of each block of a grid cut ``splits[k]`` times along axis k.

    Blocks are ordered row-major over the block grid (axis 0 slowest), and the indices inside a
    block are row-major too, so the result gathers ``coords`` (from :func:`grid_coords`) into
    segments directly.

    Args:
        grid_shape: (n_0, ..., n_{d-1}); each n_k must be a multiple of splits[k].
        splits: (s_0, ..., s_{d-1}) number of blocks along each axis.

    Returns:
        (T, N // T) int64 with T = prod(splits), N = prod(grid_shape).
    """
    grid_shape, splits = tuple(grid_shape), tuple(splits)
    check_splits(grid_shape, splits)
    d = len(grid_shape)
    num_segments = math.prod(splits)
    total = math.prod(grid_shape)
    blocked_shape: list[int] = []
    for size, split in zip(grid_shape, splits, strict=True):
        blocked_shape += [split, size // split]
    index = torch.arange(total, dtype=torch.int64).reshape(blocked_shape)
    # (s_0, c_0, s_1, c_1, ...) -> (s_0, s_1, ..., c_0, c_1, ...)
    index = index.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2))
    return index.reshape(num_segments, total // num_segments).contiguous()
