"""Appearance of the procedural city: procedural textures, sun lighting, pixels from hits.

Textures are functions of the exact hit point (no texture images, no filtering), so a pixel's
colour is a deterministic function of its ray: one ray per pixel centre, no anti-aliasing.

- ground: asphalt streets with dashed centre lines, paved lots (2 m tiles), grass outside the city
  (8 m checker);
- walls: per-building facade colour with a grid of windows (3 m apart, 3.5 m floors, none on the
  ground floor);
- roofs: per-building grey with a darker 0.6 m parapet band.

Shading is Lambertian and view independent (a NeRF's colour head can fit it exactly):
``albedo * (ambient + (1 - ambient) * max(0, n . sun)) * tint``; no shadows. The sky is one
constant colour in every phase, so a model can use it as a fixed background colour; time phases
move the sun (east to west) and warm its tint at low sun.
"""

from dataclasses import dataclass

import numpy as np

from mclnf_dist.scenes.city_geometry import BUILDING, GROUND, CityLayout, Hits, cast_rays

SKY_COLOR = np.array([0.62, 0.76, 0.92])
"""Background colour (rays that leave the scene box)."""
AMBIENT = 0.35
WINDOW_SPACING, FLOOR_HEIGHT = 3.0, 3.5
PARAPET = 0.6


@dataclass
class Lighting:
    """Sun of one time phase."""

    sun: np.ndarray
    """(3,) unit vector towards the sun."""
    tint: np.ndarray
    """(3,) colour of the sunlight (multiplies the shaded albedo)."""


def phase_lighting(phase: int, num_phases: int) -> Lighting:
    """Sun of phase ``phase`` of ``num_phases``: morning (east, warm) to evening (west, warm).

    One phase is mid-day-ish light. Phases sample the middle of equal slices of the day, so
    neither the first nor the last phase has the sun on the horizon.
    """
    day = (phase + 0.5) / num_phases  # (0, 1)
    azimuth = np.deg2rad(90.0 + 180.0 * day)  # from east (+x... rotated) through south to west
    height = np.sin(np.pi * day)  # 0 at dawn/dusk, 1 at noon
    elevation = np.deg2rad(15.0 + 50.0 * height)
    sun = np.array(
        [
            np.cos(elevation) * np.sin(azimuth),
            -np.cos(elevation) * np.cos(azimuth),
            np.sin(elevation),
        ]
    )
    warm = np.array([1.0, 0.78, 0.55])
    tint = warm + (np.ones(3) - warm) * height
    return Lighting(sun=sun / np.linalg.norm(sun), tint=tint)


def _checker(a: np.ndarray, b: np.ndarray, size: float) -> np.ndarray:
    """(R,) bool checkerboard of ``size`` squares."""
    return ((np.floor(a / size) + np.floor(b / size)) % 2).astype(bool)


def ground_albedo(layout: CityLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R, 3) ground colour at points (R,) x, y on the ground square."""
    size, half = layout.block_size, layout.street_width / 2
    span_x, span_y = layout.blocks_x * size, layout.blocks_y * size
    near_x = np.clip(np.round(x / size), 0, layout.blocks_x) * size  # nearest street line x = i B
    near_y = np.clip(np.round(y / size), 0, layout.blocks_y) * size
    off_x, off_y = np.abs(x - near_x), np.abs(y - near_y)
    within_x = (x >= -half) & (x <= span_x + half)
    within_y = (y >= -half) & (y <= span_y + half)
    street_y = (off_x <= half) & within_y  # street running along y
    street_x = (off_y <= half) & within_x
    in_city = within_x & within_y
    color = np.where(_checker(x, y, 8.0)[:, None], [0.30, 0.50, 0.24], [0.34, 0.55, 0.27])  # grass
    paving = np.where(_checker(x, y, 2.0)[:, None], [0.62, 0.61, 0.58], [0.68, 0.67, 0.64])
    color = np.where(in_city[:, None], paving, color)
    street = street_x | street_y
    color = np.where(street[:, None], [0.27, 0.27, 0.29], color)
    dashes = np.where(street_y & ~street_x, (y % 6.0) < 3.0, (x % 6.0) < 3.0)
    line = (street_y & ~street_x & (off_x < 0.15)) | (street_x & ~street_y & (off_y < 0.15))
    return np.where((line & dashes)[:, None], [0.92, 0.85, 0.45], color)


def building_albedo(layout: CityLayout, points: np.ndarray, hits: Hits) -> np.ndarray:
    """(R, 3) colour of building hit points (R, 3) (walls with windows, roofs with parapets)."""
    index = hits.box
    lower, upper = layout.boxes[index, :3], layout.boxes[index, 3:]
    wall_x = hits.axis == 0  # face normal along x: the wall spans y
    along = np.where(wall_x, points[:, 1] - lower[:, 1], points[:, 0] - lower[:, 0])
    width = np.where(wall_x, upper[:, 1] - lower[:, 1], upper[:, 0] - lower[:, 0])
    z = points[:, 2]
    bay = (along % WINDOW_SPACING) / WINDOW_SPACING  # position within a window bay, [0, 1)
    floor = (z % FLOOR_HEIGHT) / FLOOR_HEIGHT  # position within a storey, [0, 1)
    in_bay = (bay > 0.2) & (bay < 0.8)
    in_floor = (floor > 0.3) & (floor < 0.85)
    window = in_bay & in_floor & (z > FLOOR_HEIGHT) & (along > 0.5) & (along < width - 0.5)
    window &= z < upper[:, 2] - 0.5
    wall = np.where(window[:, None], layout.window_colors[index], layout.wall_colors[index])
    edge = np.minimum(
        np.minimum(points[:, 0] - lower[:, 0], upper[:, 0] - points[:, 0]),
        np.minimum(points[:, 1] - lower[:, 1], upper[:, 1] - points[:, 1]),
    )
    roof = layout.roof_colors[index] * np.where(edge < PARAPET, 0.7, 1.0)[:, None]
    return np.where((hits.axis == 2)[:, None], roof, wall)


def normals(directions: np.ndarray, hits: Hits) -> np.ndarray:
    """(R, 3) outward unit normals of the faces hit (against the ray along the hit axis)."""
    out = np.zeros_like(directions)
    rows = np.arange(len(directions))
    out[rows, hits.axis] = -np.sign(directions[rows, hits.axis])
    out[hits.kind == GROUND] = [0.0, 0.0, 1.0]
    return out


def shade_rays(
    layout: CityLayout, origins: np.ndarray, directions: np.ndarray, lighting: Lighting
) -> np.ndarray:
    """uint8 (R, 3) colours of rays (R, 3) (origins, directions float64) under ``lighting``."""
    origins = np.asarray(origins, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    hits = cast_rays(layout, origins, directions)
    color = np.tile(SKY_COLOR, (len(origins), 1))
    solid = hits.kind != 0
    if solid.any():
        sub = Hits(hits.kind[solid], hits.depth[solid], hits.box[solid], hits.axis[solid])
        points = origins[solid] + sub.depth[:, None] * directions[solid]
        albedo = np.zeros((len(points), 3))
        ground, building = sub.kind == GROUND, sub.kind == BUILDING
        albedo[ground] = ground_albedo(layout, points[ground, 0], points[ground, 1])
        if building.any():
            part = Hits(sub.kind[building], sub.depth[building], sub.box[building],
                        sub.axis[building])  # fmt: skip
            albedo[building] = building_albedo(layout, points[building], part)
        normal, sun = normals(directions[solid], sub), lighting.sun
        # Explicit multiply-adds (not a BLAS matvec): identical bytes on every machine.
        cosine = normal[:, 0] * sun[0] + normal[:, 1] * sun[1] + normal[:, 2] * sun[2]
        cosine = np.maximum(cosine, 0.0)
        light = AMBIENT + (1.0 - AMBIENT) * cosine
        color[solid] = albedo * light[:, None] * lighting.tint
    return (color * 255.0).round().clip(0, 255).astype(np.uint8)
