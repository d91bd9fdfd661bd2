"""Write a Blender-format object scene (``transforms_{train,val,test}.json``, RGBA PNGs on a
transparent background) of a textured still life, ray-traced exactly: a stand-in for the
issue's Blender check on this machine, which has no Blender scene.

The object: a checkered cube, a striped sphere, a sphere with a latitude-longitude checker and a
plain shaded sphere, inside [-1.1, 1.1]^3, Lambert-shaded from a fixed light (view-independent,
no shadows). Cameras: ``--train`` and ``--test`` views on the upper hemisphere of radius 4
looking at the origin (z up, Blender's camera axes: -z forward, y up), ``camera_angle_x`` 0.69
(Blender's lego), pixels supersampled 2x2. Prints ONE JSON line (where, how many views).

    python bench/object_scene.py --out /tmp/object --size 400
    python pipelines/city_nerf.py --recipe scene-quick --data.scene /tmp/object \\
        --data.downscale 2 --methods random
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

ANGLE_X = 0.6911112070083618
LIGHT = np.array([0.4, -0.5, 0.77]) / np.linalg.norm([0.4, -0.5, 0.77])
SPHERES = [  # centre, radius, texture
    ((0.55, 0.45, 0.35), 0.35, "stripes"),
    ((-0.5, 0.5, 0.3), 0.3, "checker"),
    ((0.3, -0.6, 0.25), 0.25, "plain"),
]
CUBE = (np.array([-0.9, -0.9, -0.5]), np.array([0.1, 0.1, 0.5]))


def hemisphere_poses(count: int, seed: int) -> list[np.ndarray]:
    """Camera-to-world 4x4 poses (Blender axes) on the upper hemisphere, radius 4."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(count):
        azimuth = rng.uniform(0, 2 * np.pi)
        elevation = np.arcsin(rng.uniform(0.1, 0.95))
        ground = np.cos(elevation)
        centre = 4.0 * np.array(
            [ground * np.cos(azimuth), ground * np.sin(azimuth), np.sin(elevation)]
        )
        back = centre / np.linalg.norm(centre)  # camera +z points away from the object
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, centre
        poses.append(pose)
    return poses


def texture(kind: str, normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(N, 3) albedo of the surface points of one primitive."""
    theta = np.arccos(np.clip(normal[:, 2], -1, 1))
    phi = np.arctan2(normal[:, 1], normal[:, 0])
    if kind == "stripes":
        band = (np.floor(theta / np.pi * 10) % 2)[:, None]
        return band * np.array([0.9, 0.2, 0.15]) + (1 - band) * np.array([0.95, 0.85, 0.3])
    if kind == "checker":
        check = ((np.floor(theta / np.pi * 8) + np.floor((phi + np.pi) / np.pi * 8)) % 2)[:, None]
        return check * np.array([0.1, 0.3, 0.8]) + (1 - check) * np.array([0.9, 0.9, 0.95])
    if kind == "cube":
        cells = np.floor(point * 5.0).sum(-1) % 2
        return np.where(cells[:, None] > 0, [0.2, 0.6, 0.25], [0.85, 0.55, 0.3])
    return np.broadcast_to(np.array([0.6, 0.3, 0.7]), normal.shape)


def trace(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray: (N, 3) shaded colour and (N,) coverage (0 or 1)."""
    count = origins.shape[0]
    depth = np.full(count, np.inf)
    colour = np.zeros((count, 3))
    for centre, radius, kind in SPHERES:
        offset = origins - np.array(centre)
        b = (offset * directions).sum(-1)
        disc = b * b - ((offset * offset).sum(-1) - radius * radius)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        hit = (disc > 0) & (t > 0) & (t < depth)
        point = origins[hit] + t[hit, None] * directions[hit]
        normal = (point - np.array(centre)) / radius
        shade = 0.35 + 0.65 * np.maximum((normal * LIGHT).sum(-1), 0.0)
        colour[hit] = texture(kind, normal, point) * shade[:, None]
        depth[hit] = t[hit]
    low, high = CUBE
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (low - origins) / directions, (high - origins) / directions
    entry = np.minimum(t0, t1).max(-1)
    leave = np.maximum(t0, t1).min(-1)
    hit = (entry < leave) & (entry > 0) & (entry < depth)
    point = origins[hit] + entry[hit, None] * directions[hit]
    axis = np.minimum(t0, t1)[hit].argmax(-1)
    normal = np.zeros_like(point)
    normal[np.arange(len(axis)), axis] = -np.sign(directions[hit][np.arange(len(axis)), axis])
    shade = 0.35 + 0.65 * np.maximum((normal * LIGHT).sum(-1), 0.0)
    colour[hit] = texture("cube", normal, point) * shade[:, None]
    depth[hit] = entry[hit]
    return colour, np.isfinite(depth).astype(np.float64)


def render(pose: np.ndarray, size: int, supersample: int = 2) -> np.ndarray:
    """(size, size, 4) uint8 RGBA, alpha 0 where no object is, each pixel the mean of
    ``supersample^2`` rays."""
    focal = 0.5 * size / np.tan(0.5 * ANGLE_X)
    fine = size * supersample
    u, v = np.meshgrid((np.arange(fine) + 0.5) / supersample, (np.arange(fine) + 0.5) / supersample)
    camera = np.stack([(u - size / 2) / focal, -(v - size / 2) / focal, -np.ones_like(u)], -1)
    directions = camera.reshape(-1, 3) @ pose[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origins = np.broadcast_to(pose[:3, 3], directions.shape)
    colour, alpha = trace(origins, directions)
    rgba = np.concatenate([colour * alpha[:, None], alpha[:, None]], -1)
    rgba = rgba.reshape(size, supersample, size, supersample, 4).mean(axis=(1, 3))
    # straight (not premultiplied) colour in the PNG, as Blender writes it
    rgba[..., :3] = rgba[..., :3] / np.maximum(rgba[..., 3:], 1e-6)
    return (np.clip(rgba, 0, 1) * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=10)
    args = parser.parse_args()
    splits = {"train": args.train, "val": args.test, "test": args.test}
    for index, (split, count) in enumerate(splits.items()):
        os.makedirs(os.path.join(args.out, split), exist_ok=True)
        frames = []
        for i, pose in enumerate(hemisphere_poses(count, seed=index)):
            Image.fromarray(render(pose, args.size)).save(f"{args.out}/{split}/r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        with open(os.path.join(args.out, f"transforms_{split}.json"), "w") as handle:
            json.dump({"camera_angle_x": ANGLE_X, "frames": frames}, handle, indent=1)
    print(json.dumps({"bench": "object_scene", "out": args.out, "size": args.size, **splits}))


if __name__ == "__main__":
    sys.exit(main())
