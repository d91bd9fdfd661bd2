"""Lens distortion is inverted exactly: every pixel's ray, projected and distorted again with the
textbook forward model (written out here, independently of the code under test), lands back on
the pixel centre it was made for."""

import json
from pathlib import Path

import numpy as np
import pytest

from mclnf_dist.cameras.lens import Distortion, check_invertible
from mclnf_dist.nerf.rays import camera_rays

FOX = Path("/work/shared/scenes/fox/transforms.json")


def pixel_centres(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tile(np.arange(width) + 0.5, height), np.repeat(np.arange(height) + 0.5, width)


def opencv_camera_directions(c2w, lens, fx, fy, cx, cy, width, height) -> np.ndarray:
    """(H*W, 3) ray directions in OpenCV camera axes (x right, y down, z forward)."""
    _, directions = camera_rays(c2w, fx, fy, cx, cy, width, height, distortion=lens)
    camera = directions.double().numpy() @ np.asarray(c2w)[:3, :3]  # world -> camera (OpenGL)
    return camera * np.array([1.0, -1.0, -1.0])


def perspective_forward(lens: Distortion, x, y):
    r2 = x * x + y * y
    radial = 1 + lens.k1 * r2 + lens.k2 * r2**2 + lens.k3 * r2**3
    x_d = x * radial + 2 * lens.p1 * x * y + lens.p2 * (r2 + 2 * x * x)
    y_d = y * radial + lens.p1 * (r2 + 2 * y * y) + 2 * lens.p2 * x * y
    return x_d, y_d


def fisheye_forward(lens: Distortion, x, y, z):
    r = np.hypot(x, y)
    theta = np.arctan2(r, z)
    t = theta
    theta_d = t * (1 + lens.k1 * t**2 + lens.k2 * t**4 + lens.k3 * t**6 + lens.k4 * t**8)
    scale = np.where(r > 0, theta_d / np.where(r > 0, r, 1), 1.0)
    return x * scale, y * scale


def rotation(seed: int) -> np.ndarray:
    c2w = np.eye(4)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    c2w[:3, :3] = q * np.sign(np.linalg.det(q))
    c2w[:3, 3] = [1.0, -2.0, 0.5]
    return c2w


def fox_camera() -> tuple[Distortion, tuple]:
    meta = json.loads(FOX.read_text())
    lens = Distortion("OPENCV", k1=meta["k1"], k2=meta["k2"], p1=meta["p1"], p2=meta["p2"])
    scale = 8  # a downscaled fox: same lens, 135 x 240 pixels
    intrinsics = (meta["fl_x"] / scale, meta["fl_y"] / scale, meta["cx"] / scale,
                  meta["cy"] / scale, int(meta["w"]) // scale, int(meta["h"]) // scale)  # fmt: skip
    return lens, intrinsics


CASES = {
    "strong opencv": (
        Distortion("OPENCV", k1=-0.28, k2=0.09, k3=-0.01, p1=1e-3, p2=-8e-4),
        (300.0, 310.0, 161.3, 118.7, 320, 240),
    ),
    "fisheye 150 deg": (
        Distortion("OPENCV_FISHEYE", k1=0.05, k2=-0.01, k3=0.003, k4=-5e-4),
        (120.0, 121.0, 160.2, 119.6, 320, 240),
    ),
}


@pytest.mark.parametrize("case", ["fox", *CASES])
def test_undistorted_rays_redistort_to_their_pixel_centres(case):
    lens, (fx, fy, cx, cy, width, height) = fox_camera() if case == "fox" else CASES[case]
    assert check_invertible(lens, fx, fy, cx, cy, width, height) is None
    camera = opencv_camera_directions(rotation(3), lens, fx, fy, cx, cy, width, height)
    x, y, z = camera.T
    if lens.model == "OPENCV_FISHEYE":
        x_d, y_d = fisheye_forward(lens, x, y, z)
        assert (z < 0.3).any()  # the wide corners really are far off axis
    else:
        x_d, y_d = perspective_forward(lens, x / z, y / z)
    u, v = pixel_centres(width, height)
    error = np.hypot(fx * x_d + cx - u, fy * y_d + cy - v)
    assert error.max() < 1e-3, error.max()
    # and the lens matters: the pinhole ray of a corner pixel is far from the true one
    _, pinhole = camera_rays(np.eye(4), fx, fy, cx, cy, width, height)
    _, true = camera_rays(np.eye(4), fx, fy, cx, cy, width, height, distortion=lens)
    assert (pinhole - true).norm(dim=-1).max() > 1e-3


def test_folding_lens_is_refused():
    """r (1 - 0.9 r^2 + 0.3 r^4) rises to r = 0.72, falls to r = 1.13, then rises again: pixels
    beyond radius 0.39 have more than one ray (or none)."""
    fold = Distortion("OPENCV", k1=-0.9, k2=0.3)
    reason = check_invertible(fold, 100.0, 100.0, 100.0, 100.0, 200, 200)
    assert reason and ("folds over" in reason or "do not invert" in reason), reason
    assert check_invertible(fold, 400.0, 400.0, 100.0, 100.0, 200, 200) is None  # narrow: fine
