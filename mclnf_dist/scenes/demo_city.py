"""Procedural city scenes with exact ground truth: ``make_city(out_dir, CityConfig(...))``.

A seeded grid of ``blocks_x x blocks_y`` city blocks (see :mod:`.city_geometry` for the layout
and the world frame: metres, z up, ground at z = 0, block (i, j) at ``[i B, (i+1) B] x [j B,
(j+1) B]``), rendered by an exact ray caster (:mod:`.city_render`) from aerial cameras (oblique,
35-60 degrees down, orbiting each block) and street cameras (1.7 m up, looking along a street).
With ``time_phases = P > 1`` every camera is rendered once per phase with that phase's sun, and
its frame's ``time`` is ``p / (P - 1)``.

The output folder follows the nerfstudio ``transforms.json`` convention (read it back with
:func:`mclnf_dist.scenes.scene.load_scene`)::

    OUT/images/frame_00000.png ...     one PNG per (phase, camera)
    OUT/transforms.json                fl_x fl_y cx cy w h, near, far, scene_box, background,
                                       frames [{file_path, transform_matrix, time, ...}],
                                       train/val/test_filenames, generator (the config)

Splits are per camera (all phases of a held-out camera are held out): a seeded shuffle of the
cameras, then every ``holdout_every``-th is ``val`` and the one after ``test``. Writes are atomic
per file and ``transforms.json`` comes last, so a crash never leaves a folder that looks complete;
re-running with the same config on a complete folder is a no-op.
"""

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np

from mclnf_dist.config import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    check_config,
)
from mclnf_dist.config_rules import cross_field_rule
from mclnf_dist.nerf.rays import camera_rays
from mclnf_dist.scenes.city_geometry import CityLayout, make_layout
from mclnf_dist.scenes.city_render import SKY_COLOR, phase_lighting, shade_rays
from mclnf_dist.storage import (
    filesystem_for,
    join,
    read_json,
    write_atomic,
    write_png,
)

log = logging.getLogger(__name__)
STREET_EYE_HEIGHT = 1.7
RAYS_PER_BATCH = 1 << 16
"""Rays cast at once (several frames of one phase): amortises numpy overhead, bounds memory."""


@dataclass
class CityConfig:
    """A procedural city scene; the same config and seed always give identical files."""

    blocks_x: PositiveInt = 2
    """City blocks along x."""
    blocks_y: PositiveInt = 2
    """City blocks along y."""
    block_size: PositiveFloat = 60.0
    """Side of a block in metres, streets included."""
    street_width: PositiveFloat = 14.0
    """Width of the streets along block borders (metres)."""
    buildings_per_block: PositiveInt = 4
    """Box buildings in each block's lot (on a sub-grid)."""
    min_height: PositiveFloat = 8.0
    """Lowest building (metres)."""
    max_height: PositiveFloat = 40.0
    """Highest building (metres)."""
    width: PositiveInt = 64
    """Image width in pixels."""
    height: PositiveInt = 64
    """Image height in pixels."""
    fov_degrees: Annotated[float, Range(ge=1, lt=170)] = 60.0
    """Horizontal field of view of every camera."""
    aerial_views_per_block: NonNegativeInt = 4
    """Oblique aerial cameras looking at each block."""
    street_views_per_block: NonNegativeInt = 4
    """Street-level cameras on the streets around each block."""
    time_phases: PositiveInt = 1
    """Lighting phases (sun positions); every camera is rendered once per phase."""
    holdout_every: NonNegativeInt = 8
    """One camera in this many goes to val and one to test (0: all train)."""
    seed: NonNegativeInt = 0
    """Seed of the layout, the colours, the cameras and the split."""

    def __post_init__(self) -> None:
        check_config(self, prefix="CityConfig.")  # its cross-field rules included (below)

    @property
    def focal(self) -> float:
        """Focal length in pixels (square pixels, fx = fy)."""
        return 0.5 * self.width / math.tan(0.5 * math.radians(self.fov_degrees))


@cross_field_rule(CityConfig)
def city_fits(cfg: CityConfig, prefix: str) -> str | None:
    """Cameras to render, buildings whose heights are a range, streets narrower than a block."""
    if cfg.aerial_views_per_block + cfg.street_views_per_block < 1:
        return (
            f"{prefix}aerial_views_per_block and {prefix}street_views_per_block are both 0 "
            "(expected at least one view per block)"
        )
    if cfg.min_height > cfg.max_height:
        return (
            f"{prefix}min_height={cfg.min_height:g} is above {prefix}max_height="
            f"{cfg.max_height:g} (expected min_height <= max_height)"
        )
    if not cfg.street_width < cfg.block_size - 8:
        return (
            f"{prefix}street_width={cfg.street_width:g} leaves no lot in {prefix}block_size="
            f"{cfg.block_size:g} (expected street_width < block_size - 8 metres)"
        )
    return None


def city_layout(cfg: CityConfig) -> CityLayout:
    """The buildings of ``cfg`` (its own random stream: cameras do not change the buildings)."""
    rng = np.random.default_rng([cfg.seed, 0])
    return make_layout(
        cfg.blocks_x, cfg.blocks_y, cfg.block_size, cfg.street_width,
        cfg.buildings_per_block, cfg.min_height, cfg.max_height, rng,
    )  # fmt: skip


def look_along(eye: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world of a camera at ``eye`` looking along ``forward`` (world z up)."""
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def city_cameras(cfg: CityConfig, layout: CityLayout) -> list[tuple[str, np.ndarray]]:
    """``(kind, c2w (4, 4))`` of every camera: per block its aerial, then its street cameras."""
    rng = np.random.default_rng([cfg.seed, 1])
    size, street = cfg.block_size, cfg.street_width
    cameras = []
    for j in range(cfg.blocks_y):
        for i in range(cfg.blocks_x):
            for _ in range(cfg.aerial_views_per_block):
                target = np.array([(i + 0.5 + rng.uniform(-0.25, 0.25)) * size,
                                   (j + 0.5 + rng.uniform(-0.25, 0.25)) * size, 0.0])  # fmt: skip
                azimuth = rng.uniform(0, 2 * np.pi)
                pitch = np.deg2rad(rng.uniform(35.0, 60.0))
                altitude = layout.max_height + rng.uniform(0.5, 1.5) * size
                forward = np.array([np.cos(pitch) * np.cos(azimuth),
                                    np.cos(pitch) * np.sin(azimuth), -np.sin(pitch)])  # fmt: skip
                eye = target - forward * (altitude / np.sin(pitch))
                cameras.append(("aerial", look_along(eye, forward)))
            for _ in range(cfg.street_views_per_block):
                side = rng.integers(4)  # street west, east, south or north of the block
                along = rng.uniform(0.1, 0.9) * size
                lateral = rng.uniform(-0.3, 0.3) * street
                if side < 2:  # street along y at x = (i + side) B
                    eye = np.array([(i + side) * size + lateral, j * size + along, 0.0])
                    heading = np.pi / 2 if rng.random() < 0.5 else -np.pi / 2
                else:
                    eye = np.array([i * size + along, (j + side - 2) * size + lateral, 0.0])
                    heading = 0.0 if rng.random() < 0.5 else np.pi
                eye[2] = STREET_EYE_HEIGHT
                yaw = heading + np.deg2rad(rng.uniform(-20.0, 20.0))
                pitch = np.deg2rad(rng.uniform(0.0, 15.0))
                forward = np.array([np.cos(pitch) * np.cos(yaw),
                                    np.cos(pitch) * np.sin(yaw), np.sin(pitch)])  # fmt: skip
                cameras.append(("street", look_along(eye, forward)))
    return cameras


def camera_splits(cfg: CityConfig, num_cameras: int) -> list[str]:
    """``train``/``val``/``test`` of each camera (seeded shuffle, then every n-th held out)."""
    rank = np.random.default_rng([cfg.seed, 2]).permutation(num_cameras)
    splits = []
    for position in rank:
        every = cfg.holdout_every
        if every >= 2 and position % every == every - 2:
            splits.append("val")
        elif every >= 2 and position % every == every - 1:
            splits.append("test")
        else:
            splits.append("train")
    return splits


def phase_time(phase: int, num_phases: int) -> float:
    """A frame's ``time`` in [0, 1] for its phase."""
    return phase / (num_phases - 1) if num_phases > 1 else 0.0


def render_views(layout: CityLayout, cfg: CityConfig, c2ws: np.ndarray, phase: int) -> np.ndarray:
    """uint8 (N, H, W, 3) images of cameras ``c2ws`` (N, 4, 4) in lighting phase ``phase``.

    Rays come from :func:`mclnf_dist.nerf.rays.camera_rays` (float32, as a NeRF sees them), so the
    images are exactly what those rays see.
    """
    f, w, h = cfg.focal, cfg.width, cfg.height
    origins, directions = camera_rays(np.asarray(c2ws), f, f, w / 2, h / 2, w, h)  # (N, HW, 3)
    lighting = phase_lighting(phase, cfg.time_phases)
    colors = shade_rays(
        layout,
        origins.numpy().reshape(-1, 3).astype(np.float64),
        directions.numpy().reshape(-1, 3).astype(np.float64),
        lighting,
    )
    return colors.reshape(len(c2ws), h, w, 3)


def render_frame(cfg: CityConfig, c2w: np.ndarray, time_value: float = 0.0) -> np.ndarray:
    """uint8 (H, W, 3) image of one camera at ``time_value`` (the phase nearest to it)."""
    phase = round(time_value * (cfg.time_phases - 1))
    return render_views(city_layout(cfg), cfg, np.asarray(c2w)[None], phase)[0]


def make_city(out_dir: str, cfg: CityConfig) -> str:
    """Render the city of ``cfg`` into the scene folder ``out_dir``; returns ``out_dir``."""
    fs, root = filesystem_for(out_dir)
    transforms = join(root, "transforms.json")
    generator = {"name": "mclnf_dist.scenes.city", "version": 1, "config": asdict(cfg)}
    if fs.exists(transforms):
        try:
            if read_json(fs, transforms).get("generator") == generator:
                log.info("city already complete in %s", out_dir)
                return out_dir
        except ValueError:  # a foreign or broken transforms.json: replaced below
            pass
        fs.rm(transforms)  # from now on the folder does not look complete
    started = time.perf_counter()
    layout = city_layout(cfg)
    cameras = city_cameras(cfg, layout)
    splits = camera_splits(cfg, len(cameras))
    c2ws = np.stack([c2w for _, c2w in cameras])
    per_batch = max(1, RAYS_PER_BATCH // (cfg.width * cfg.height))
    frames, filenames = [], {"train": [], "val": [], "test": []}
    # Encoding and fsync-ed atomic writes run in threads (they release the GIL) while the next
    # batch renders; all of them finish before transforms.json is written.
    with ThreadPoolExecutor(max_workers=4) as writers:
        pending = []
        for phase in range(cfg.time_phases):
            for first in range(0, len(cameras), per_batch):
                images = render_views(layout, cfg, c2ws[first : first + per_batch], phase)
                for offset, image in enumerate(images):
                    camera = first + offset
                    name = f"images/frame_{phase * len(cameras) + camera:05d}.png"
                    pending.append(writers.submit(write_png, join(root, name), image, fs))
                    frames.append(
                        {
                            "file_path": name,
                            "transform_matrix": c2ws[camera].tolist(),
                            "time": phase_time(phase, cfg.time_phases),
                            "camera": camera,
                            "kind": cameras[camera][0],
                        }
                    )
                    filenames[splits[camera]].append(name)
        for future in pending:
            future.result()  # re-raises a failed write
    box = layout.scene_box()
    corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]])
    far = float(np.linalg.norm(c2ws[:, None, :3, 3] - corners[None], axis=-1).max())
    meta = {
        "fl_x": cfg.focal, "fl_y": cfg.focal, "cx": cfg.width / 2, "cy": cfg.height / 2,
        "w": cfg.width, "h": cfg.height,
        "near": 0.05, "far": far, "scene_box": box.tolist(), "background": SKY_COLOR.tolist(),
        "up_axis": "z", "units": "metres", "frames": frames, "generator": generator,
        **{f"{split}_filenames": names for split, names in filenames.items()},
    }  # fmt: skip
    write_atomic(transforms, meta, fs=fs)
    seconds = time.perf_counter() - started
    rays = len(frames) * cfg.width * cfg.height
    log.info("city: %d frames, %d rays in %.1f s (%.0f rays/s)", len(frames), rays, seconds,
             rays / seconds)  # fmt: skip
    return out_dir
