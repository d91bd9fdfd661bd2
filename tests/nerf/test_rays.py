"""Camera rays follow the documented convention; box clipping is exact."""

import math

import numpy as np
import torch

from mclnf_dist.nerf.rays import camera_rays, near_far_from_box


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def pose(rotation: np.ndarray, centre) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, centre
    return c2w


def test_centre_pixel_looks_down_camera_minus_z():
    c2w = pose(rotation_z(0.7) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]]), [1, 2, 3])
    origins, directions = camera_rays(c2w, 4.0, 4.0, 2.5, 1.5, 5, 3)  # odd size: a centre pixel
    assert origins.shape == directions.shape == (15, 3)
    assert origins.dtype == directions.dtype == torch.float32
    centre = directions[1 * 5 + 2].double().numpy()
    np.testing.assert_allclose(centre, -c2w[:3, 2], atol=1e-7)
    np.testing.assert_allclose(origins.numpy(), np.tile([1, 2, 3], (15, 1)))


def test_corner_pixels_and_unit_length():
    origins, directions = camera_rays(np.eye(4), 2.0, 4.0, 2.5, 1.5, 5, 3)
    top_left = np.array([(0.5 - 2.5) / 2.0, -(0.5 - 1.5) / 4.0, -1.0])  # +y up, rows go down
    bottom_right = np.array([(4.5 - 2.5) / 2.0, -(2.5 - 1.5) / 4.0, -1.0])
    np.testing.assert_allclose(directions[0], top_left / np.linalg.norm(top_left), atol=1e-6)
    np.testing.assert_allclose(
        directions[-1], bottom_right / np.linalg.norm(bottom_right), atol=1e-6
    )
    np.testing.assert_allclose(directions.norm(dim=-1), 1.0, atol=1e-6)


def test_batched_cameras_match_single_ones_exactly():
    c2ws = np.stack([pose(rotation_z(a), [a, -a, 2 * a]) for a in (0.0, 0.5, 2.0)])
    focal = np.array([3.0, 4.0, 5.0])
    origins, directions = camera_rays(torch.from_numpy(c2ws), focal, focal, 3.0, 2.0, 6, 4)
    assert directions.shape == (3, 24, 3)
    for k in range(3):
        single_o, single_d = camera_rays(c2ws[k], focal[k], focal[k], 3.0, 2.0, 6, 4)
        assert torch.equal(single_o, origins[k]) and torch.equal(single_d, directions[k])


def test_near_far_from_box():
    origins = torch.tensor([[-2.0, 0.5, 0.5], [0.5, 0.5, 0.5], [-2.0, 5.0, 0.5]])
    directions = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    near, far, hit = near_far_from_box(origins, directions, [0, 0, 0], [1, 1, 1], min_near=0.01)
    assert hit.tolist() == [True, True, False]
    np.testing.assert_allclose(near[:2], [2.0, 0.01])  # the second camera is inside the box
    np.testing.assert_allclose(far[:2], [3.0, 0.5])
    assert near[2] == far[2] == 0.01
