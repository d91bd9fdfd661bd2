"""Block partition: grid over cameras, nearest-centroid routing, ray membership with overlap."""

import numpy as np
import pytest

from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.partition import BlockPartition, ground_axes, load_partition


def grid_2x2(overlap: float = 0.1, up_axis: str = "z", **kwargs) -> BlockPartition:
    """Cameras spanning [0, 4] x [0, 4] on the ground -> cells of side 2, centroids at 1 and 3."""
    axes = ground_axes(up_axis)
    positions = np.zeros((4, 3))
    positions[:, list(axes)] = [[0, 0], [4, 0], [0, 4], [4, 4]]
    up = 3 - sum(axes)
    positions[:, up] = [5.0, 9.0, 1.0, 2.0]  # camera heights must not matter
    return BlockPartition.from_cameras(positions, 2, 2, overlap=overlap, up_axis=up_axis, **kwargs)


def test_grid_centroids_and_extents_ignore_height():
    part = grid_2x2()
    assert part.num_blocks == 4 and part.grid_shape == (2, 2)
    np.testing.assert_allclose(part.centroids[:, :2], [[1, 1], [1, 3], [3, 1], [3, 3]], atol=0.01)
    assert np.all(part.centroids[:, 2] == 0)
    extents = part.block_extents()
    assert extents.shape == (4, 2, 2)
    np.testing.assert_allclose(extents[0], [[0, 0], [2, 2]], atol=0.01)
    assert part.margin == pytest.approx(0.1 * 2, rel=0.01)


@pytest.mark.parametrize("up_axis", ["z", "y"])
def test_route_points_nearest_centroid_on_ground(up_axis):
    part = grid_2x2(up_axis=up_axis)
    a, b = ground_axes(up_axis)
    points = np.zeros((4, 3))
    points[:, [a, b]] = [[0.5, 0.5], [0.5, 3.9], [3.5, 0.2], [10, 10]]
    points[:, 3 - a - b] = [100.0, -50.0, 0.0, 7.0]
    np.testing.assert_array_equal(part.route_points(points), [0, 1, 2, 3])


def test_ray_membership_respects_overlap_margin():
    part = grid_2x2(overlap=0.1)  # margin 0.2
    origins = np.array([[0.5, 0.5, 10.0], [1.9, 0.5, 10.0], [2.15, 0.5, 10.0], [2.5, 0.5, 10]])
    down = np.tile([0.0, 0.0, -1.0], (4, 1))  # vertical rays: one ground point each
    member = part.ray_blocks(origins, down, near=0.0, far=10.0)
    assert member.shape == (4, 4)
    np.testing.assert_array_equal(member, [[1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 0]])


def test_ray_crossing_blocks_belongs_to_each_block_it_samples():
    part = grid_2x2(overlap=0.0)
    member = part.ray_blocks(
        np.array([[0.5, 0.5, 1.0]]), np.array([[1.0, 1.0, 0.0]]) / np.sqrt(2), 0.0, 4.0
    )
    np.testing.assert_array_equal(member[0], [1, 0, 0, 1])  # diagonal through the grid centre
    # Membership equals "some sample's nearest centroid is b" when the margin is 0.
    rng = np.random.default_rng(0)
    origins, dirs = rng.uniform(-1, 5, (200, 3)), rng.normal(size=(200, 3))
    member = part.ray_blocks(origins, dirs, 0.5, 3.0, samples_per_ray=8)
    depths = np.linspace(0.5, 3.0, 8)
    points = origins[:, None] + depths[:, None] * dirs[:, None]
    routed = part.route_points(points.reshape(-1, 3)).reshape(200, 8)
    expected = np.zeros_like(member)
    for r in range(200):
        expected[r, routed[r]] = True
    np.testing.assert_array_equal(member, expected)


def test_time_slices_multiply_blocks():
    part = grid_2x2(times=np.array([0.0, 1.0, 2.0, 3.0]), time_slices=2)
    assert part.num_blocks == 8
    points = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [3.5, 3.5, 0.0]])
    np.testing.assert_array_equal(part.route_points(points, np.array([0.0, 2.9, 3.0])), [0, 1, 7])
    member = part.ray_blocks(points + [0, 0, 1], [[0, 0, -1]] * 3, 0, 1, times=[0.0, 2.9, 3.0])
    np.testing.assert_array_equal(np.flatnonzero(member[1]), [1])


def test_unknown_block_error_names_valid_range():
    part = grid_2x2()
    assert part.check_block(3) == 3
    with pytest.raises(MclnfError, match=r"block 4 does not exist.*0\.\.3"):
        part.check_block(4)
    with pytest.raises(MclnfError, match="block -1"):
        part.check_block(-1)


def test_save_load_round_trip(tmp_path):
    part = grid_2x2(times=np.array([0.0, 1.0]), time_slices=3)
    path = part.save(str(tmp_path))
    assert path.endswith("partition.json")
    loaded = load_partition(str(tmp_path))
    np.testing.assert_array_equal(loaded.centroids, part.centroids)
    assert loaded.to_dict() == part.to_dict()
    with pytest.raises(MclnfError, match="no partition"):
        load_partition(str(tmp_path / "missing"))


def test_bad_arguments():
    with pytest.raises(MclnfError, match="up_axis"):
        ground_axes("w")
    with pytest.raises(MclnfError, match="blocks_x"):
        BlockPartition.from_cameras(np.zeros((2, 3)), 0, 1)
