"""Geometry of the procedural city: block layout of box buildings, and an exact ray caster.

World frame (metres, **z up**, as nerfstudio and the block partition expect): the ground is the
plane ``z = 0``; block ``(i, j)`` is the square ``[i B, (i+1) B] x [j B, (j+1) B]`` (``B`` =
``block_size``); streets of width ``street_width`` run along every block border (centred on it);
each block's lot (inside the streets) holds a few axis-aligned box buildings on a sub-grid. The
ground is a finite square (the city plus half a block all round), so all geometry lies in a known
box and rays that leave it see the sky, which a NeRF renders as its background colour.

Caster: the first hit of a ray is exact (slab tests in float64, no sampling). Buildings never
cross their block's cell, so a 2D grid walk (Amanatides-Woo DDA) over the block cells tests only
the few boxes of the cells a ray crosses, clipped to the slab ``0 <= z <= max height`` (an aerial
ray crosses one or two cells, a street ray a row of cells). All rays advance together, vectorised;
finished rays are dropped from the working set after every step.
"""

from dataclasses import dataclass

import numpy as np

GROUND, BUILDING, SKY = 1, 2, 0
"""Hit kinds."""
_TINY = 1e-12


@dataclass
class CityLayout:
    """Everything the caster and the textures need; pure data, rebuilt from the seed."""

    blocks_x: int
    blocks_y: int
    block_size: float
    street_width: float
    boxes: np.ndarray
    """(N, 6) float64 buildings: min x, y, z, max x, y, z (min z = 0)."""
    cell_boxes: np.ndarray
    """(blocks_x * blocks_y, K) int64 box indices of each block cell (cell = j * blocks_x + i),
    padded with -1."""
    wall_colors: np.ndarray
    """(N, 3) facade albedo of each building."""
    window_colors: np.ndarray
    """(N, 3) window albedo of each building."""
    roof_colors: np.ndarray
    """(N, 3) roof albedo of each building."""
    ground_min: np.ndarray
    """(2,) lower x, y corner of the finite ground square."""
    ground_max: np.ndarray
    """(2,) upper x, y corner of the finite ground square."""

    @property
    def max_height(self) -> float:
        return float(self.boxes[:, 5].max()) if len(self.boxes) else 0.0

    def scene_box(self) -> np.ndarray:
        """(2, 3) box holding all geometry (ground square x [-0.5 m, tallest roof + 0.5 m])."""
        return np.array(
            [
                [*self.ground_min, -0.5],
                [*self.ground_max, self.max_height + 0.5],
            ]
        )


def make_layout(
    blocks_x: int,
    blocks_y: int,
    block_size: float,
    street_width: float,
    buildings_per_block: int,
    min_height: float,
    max_height: float,
    rng: np.random.Generator,
) -> CityLayout:
    """Place ``buildings_per_block`` random boxes in every block's lot (deterministic per rng)."""
    side_x = int(np.ceil(np.sqrt(buildings_per_block)))  # sub-lots per block along x
    side_y = int(np.ceil(buildings_per_block / side_x))
    sidewalk = 2.0
    inset = street_width / 2 + sidewalk
    lot = block_size - 2 * inset
    if lot <= 0:
        raise ValueError(f"street_width {street_width} leaves no lot in block_size {block_size}")
    sub_x, sub_y = lot / side_x, lot / side_y
    boxes, cells = [], []
    palette = np.array(
        [[0.85, 0.80, 0.70], [0.75, 0.55, 0.45], [0.70, 0.72, 0.75], [0.90, 0.86, 0.78],
         [0.55, 0.60, 0.65], [0.80, 0.65, 0.50], [0.62, 0.70, 0.62], [0.88, 0.75, 0.72]]
    )  # fmt: skip
    for j in range(blocks_y):
        for i in range(blocks_x):
            cell = []
            for k in range(buildings_per_block):
                a, b = k % side_x, k // side_x
                x0 = i * block_size + inset + a * sub_x
                y0 = j * block_size + inset + b * sub_y
                gap = 0.08 + 0.12 * rng.random(4)  # fractions of the sub-lot left free per side
                cell.append(len(boxes))
                boxes.append(
                    [
                        x0 + gap[0] * sub_x,
                        y0 + gap[1] * sub_y,
                        0.0,
                        x0 + (1 - gap[2]) * sub_x,
                        y0 + (1 - gap[3]) * sub_y,
                        rng.uniform(min_height, max_height),
                    ]
                )
            cells.append(cell)
    count = len(boxes)
    walls = palette[rng.integers(0, len(palette), count)] * rng.uniform(0.85, 1.1, (count, 1))
    windows = np.array([0.12, 0.17, 0.25]) + rng.uniform(0.0, 0.12, (count, 3))
    roofs = np.full((count, 3), 0.45) * rng.uniform(0.7, 1.2, (count, 1))
    margin = block_size / 2
    return CityLayout(
        blocks_x=blocks_x,
        blocks_y=blocks_y,
        block_size=float(block_size),
        street_width=float(street_width),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 6),
        cell_boxes=np.array(cells, dtype=np.int64).reshape(blocks_x * blocks_y, -1),
        wall_colors=walls.clip(0, 1),
        window_colors=windows.clip(0, 1),
        roof_colors=roofs.clip(0, 1),
        ground_min=np.array([-margin, -margin]),
        ground_max=np.array([blocks_x * block_size + margin, blocks_y * block_size + margin]),
    )


def safe_directions(directions: np.ndarray) -> np.ndarray:
    """Directions with near-zero components replaced by +-1e-12 (slab maths without NaN)."""
    sign = np.where(directions < 0, -1.0, 1.0)
    return np.where(np.abs(directions) < _TINY, sign * _TINY, directions)


def slab(
    origins: np.ndarray, inverse: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Entry depth (...), exit depth (...) and the 3 per-axis entry depths (...) of ray/box pairs.

    ``origins``/``inverse`` (1 / direction) broadcast against ``lower``/``upper`` (..., 3). Axes
    are handled one at a time: numpy reductions over a last axis of size 3 are slow.
    """
    per_axis, entry, exit_ = [], None, None
    for k in range(3):
        t_a = (lower[..., k] - origins[..., k]) * inverse[..., k]
        t_b = (upper[..., k] - origins[..., k]) * inverse[..., k]
        low, high = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
        per_axis.append(low)
        entry = low if entry is None else np.maximum(entry, low)
        exit_ = high if exit_ is None else np.minimum(exit_, high)
    return entry, exit_, per_axis


@dataclass
class Hits:
    """First hits of R rays."""

    kind: np.ndarray
    """(R,) int8: SKY, GROUND or BUILDING."""
    depth: np.ndarray
    """(R,) distance along the ray (inf for sky)."""
    box: np.ndarray
    """(R,) building index (-1 if not a building)."""
    axis: np.ndarray
    """(R,) axis of the face hit (0, 1: walls, 2: roof/ground)."""


def cast_rays(layout: CityLayout, origins: np.ndarray, directions: np.ndarray) -> Hits:
    """Exact first hit of each ray (R, 3) with the buildings and the finite ground square."""
    origins = np.asarray(origins, dtype=np.float64)
    directions = safe_directions(np.asarray(directions, dtype=np.float64))
    inverse = 1.0 / directions
    count = len(origins)
    depth = np.full(count, np.inf)
    box = np.full(count, -1, dtype=np.int64)
    axis = np.full(count, 2, dtype=np.int64)
    size = layout.block_size
    if len(layout.boxes):
        band_hi = np.array([layout.blocks_x * size, layout.blocks_y * size, layout.max_height])
        t_in, t_out, _ = slab(origins, inverse, np.zeros(3), band_hi)
        t_in = np.maximum(t_in, 0.0)
        walk_buildings(layout, origins, directions, inverse, t_in, t_out, depth, box, axis)
    # Ground plane z = 0, limited to the ground square.
    downward = directions[:, 2] < -_TINY
    dz = np.where(downward, directions[:, 2], -1.0)
    t_ground = np.where(downward, -origins[:, 2] / dz, np.inf)
    point = origins[:, :2] + t_ground[:, None] * directions[:, :2]
    on_ground = downward & (t_ground > 0) & (t_ground < depth)
    on_ground &= ((point >= layout.ground_min) & (point <= layout.ground_max)).all(axis=-1)
    depth = np.where(on_ground, t_ground, depth)
    box[on_ground] = -1
    axis[on_ground] = 2
    kind = np.where(box >= 0, BUILDING, np.where(on_ground, GROUND, SKY)).astype(np.int8)
    return Hits(kind, depth, box, axis)


def walk_buildings(
    layout: CityLayout,
    origins: np.ndarray,
    directions: np.ndarray,
    inverse: np.ndarray,
    t_in: np.ndarray,
    t_out: np.ndarray,
    depth: np.ndarray,
    box: np.ndarray,
    axis: np.ndarray,
) -> None:
    """Grid-walk the block cells between depths ``t_in`` and ``t_out``; fill the building hits."""
    size, nx, ny = layout.block_size, layout.blocks_x, layout.blocks_y
    rays = np.nonzero(t_out > t_in)[0]
    ray_origins, ray_inverse = origins[rays, None], inverse[rays, None]  # (A, 1, 3)
    start = origins[rays, :2] + t_in[rays, None] * directions[rays, :2]  # (A, 2)
    cell = np.floor(start / size).astype(np.int64)
    cell = np.clip(cell, 0, [nx - 1, ny - 1])
    d2 = directions[rays, :2]
    step = np.where(d2 > 0, 1, -1)
    boundary = (cell + (d2 > 0)) * size
    moving = np.abs(d2) > _TINY  # (A, 2); a ray parallel to a cell border never crosses it
    t_next = np.where(moving, (boundary - origins[rays, :2]) * inverse[rays, :2], np.inf)
    t_step = np.where(moving, size * np.abs(inverse[rays, :2]), np.inf)
    end = t_out[rays]
    lower_all, upper_all = layout.boxes[:, :3], layout.boxes[:, 3:]
    while len(rays):
        candidates = layout.cell_boxes[cell[:, 1] * nx + cell[:, 0]]  # (A, K)
        valid = candidates >= 0
        safe = np.where(valid, candidates, 0)
        entry, exit_, per_axis = slab(
            ray_origins, ray_inverse, lower_all[safe], upper_all[safe]
        )  # (A, K), (A, K), 3 x (A, K)
        hit = valid & (entry <= exit_) & (entry > 0)
        entry = np.where(hit, entry, np.inf)
        best = entry.argmin(axis=-1)  # (A,)
        rows = np.arange(len(rays))
        best_depth = entry[rows, best]
        found = np.isfinite(best_depth)
        if found.any():
            done = rays[found]
            depth[done] = best_depth[found]
            box[done] = candidates[rows[found], best[found]]
            chosen = np.stack([t[rows[found], best[found]] for t in per_axis], axis=-1)
            axis[done] = chosen.argmax(axis=-1)  # the slab entered last is the face hit
        move_x = t_next[:, 0] < t_next[:, 1]  # (A,)
        t_leave = np.where(move_x, t_next[:, 0], t_next[:, 1])
        moved = np.stack([move_x, ~move_x], axis=-1)  # (A, 2): which cell border is crossed
        cell = cell + moved * step
        t_next = np.where(moved, t_next + t_step, t_next)
        inside = (cell >= 0).all(axis=-1) & (cell[:, 0] < nx) & (cell[:, 1] < ny)
        keep = ~found & inside & (t_leave < end)
        rays, cell, step, t_next, t_step, end, ray_origins, ray_inverse = (
            a[keep] for a in (rays, cell, step, t_next, t_step, end, ray_origins, ray_inverse)
        )
