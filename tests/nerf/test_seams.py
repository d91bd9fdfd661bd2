"""Blended block seams (Mega-NeRF): near a boundary a sample is the blend of its neighbouring
blocks' modules, continuous across the seam; outside the blend band, and with ``seam_margin=0``,
rendering is hard routing bit for bit."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mclnf_dist.fields.grid_field import GridFieldConfig
from mclnf_dist.fields.hash_grid import HashGridConfig
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params
from mclnf_dist.nerf.render import (
    blended_fields,
    partition_router,
    render_rays_routed,
    render_view,
)
from mclnf_dist.scenes.partition import BlockPartition
from mclnf_dist.scenes.routing import module_router, seam_margin_problem

BOX = ((0.0, 0.0, 0.0), (4.0, 2.0, 2.0))  # two 2x2 blocks side by side, seam at x = 2


def two_blocks(margin: float = 0.3) -> BlockPartition:
    return BlockPartition(
        centroids=[[1.0, 1.0, 0.0], [3.0, 1.0, 0.0]], grid_shape=(2, 1),
        bounds=[[0.0, 0.0], [4.0, 2.0]], margin=margin,
    )  # fmt: skip


def grid_2x2() -> BlockPartition:
    return BlockPartition.from_cameras(
        np.array([[0.0, 0.0, 1.0], [4.0, 4.0, 1.0]]), 2, 2, overlap=0.15
    )


def field(seam_margin: float = 0.0, importance: int = 0, kind: str = "mlp") -> RadianceFieldConfig:
    mlp = FieldConfig(kind="relu_pe", depth=3, width=32, pe_frequencies=4, output_offset=0.0)
    hashed = HashGridConfig(levels=3, log2_table_size=8, features_per_level=2, base_resolution=2,
                            finest_resolution=16, init_scale=0.5)  # fmt: skip
    grid = GridFieldConfig(grid=hashed, hidden_width=8, geometry_features=3, sh_degree=2)
    return RadianceFieldConfig(
        kind=kind, mlp=mlp, grid=grid, num_samples=16, num_importance_samples=importance,
        scene_box=BOX, background=(0.2, 0.5, 0.9), density_bias=-1.0, seam_margin=seam_margin,
        perturb=False,
    )  # fmt: skip


def two_modules(cfg: RadianceFieldConfig) -> dict[str, torch.Tensor]:
    return init_radiance_params(cfg, 2, torch.Generator().manual_seed(3))


def test_weights_sum_to_one_lie_in_unit_interval_and_start_with_the_routed_block():
    rng = np.random.default_rng(0)
    for partition in (two_blocks(), grid_2x2()):
        low, high = partition.bounds
        points = np.zeros((4000, 3))
        points[:, :2] = rng.uniform(low - 0.5, high + 0.5, size=(4000, 2))
        points[:2000, 0] = rng.choice(partition.centroids[:, 0], 2000) + rng.normal(0, 0.05, 2000)
        for margin in (0.0, 0.1, 0.3):
            ids, weights = partition.blend_points(points, margin)
            assert ids.shape == weights.shape == (4000, 4)
            np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
            assert (weights >= 0).all() and (weights <= 1).all()
            np.testing.assert_array_equal(ids[:, 0], partition.route_points(points))
            blended = (weights[:, 1:] > 0).any(axis=1)
            assert blended.any() == (margin > 0)
            # outside the band: exactly the nearest block with weight 1
            assert (weights[~blended, 0] == 1.0).all()


def test_band_width_and_weights_on_the_line_between_two_centroids():
    partition = two_blocks()
    x = np.array([1.9, 1.96, 2.0, 2.04, 2.1 + 1e-9])  # spacing 2, margin 0.1: band |x - 2| < 0.1
    points = np.stack([x, np.ones_like(x), np.zeros_like(x)], axis=1)
    ids, weights = partition.blend_points(points, 0.1, k=2)
    assert weights[0].tolist() == [1.0, 0.0] and weights[-1].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(weights[2], [0.5, 0.5])
    assert ids[1].tolist() == [0, 1] and ids[3].tolist() == [1, 0]
    np.testing.assert_allclose(weights[1], weights[3])  # symmetric about the seam
    assert 0.5 < weights[1, 0] < 1.0


def test_a_grid_corner_blends_all_four_blocks():
    partition = grid_2x2()
    corner = partition.centroids.mean(axis=0)
    ids, weights = partition.blend_points(corner[None], 0.1)
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(weights[0], 0.25)


def seam_line(count: int, half_width: float) -> torch.Tensor:
    """(1, count, 3) points on a line through both blocks crossing the seam x = 2."""
    x = torch.linspace(2.0 - half_width, 2.0 + half_width, count, dtype=torch.float64)
    return torch.stack([x, torch.full_like(x, 1.1), torch.full_like(x, 0.7)], -1)[None].float()


@pytest.mark.parametrize("kind", ["mlp", "hash_grid"])
def test_blending_is_continuous_across_a_seam(kind):
    """Along a line crossing the seam at 1e-4 block sizes per step: without blending the output
    jumps by the modules' difference at x = 2, with blending every step is tiny."""
    cfg = field(seam_margin=0.2, kind=kind)
    params = two_modules(cfg)
    router = module_router(two_blocks(), [0, 1], modular=True)
    step = 1e-4 * 2.0
    points = seam_line(4001, 2000 * step)  # spans the whole band (half width 0.2)
    direction = torch.tensor([[0.0, 0.6, 0.8]])
    with torch.no_grad():
        hard = blended_fields(cfg, params, points, direction, router.candidates, margin=0.0)[0]
        soft = blended_fields(cfg, params, points, direction, router.candidates)[0]
    hard_jump = (hard[1:] - hard[:-1]).abs().amax(dim=0)  # per channel: density, r, g, b
    soft_jump = (soft[1:] - soft[:-1]).abs().amax(dim=0)
    at_seam = (hard[2001] - hard[2000]).abs()  # the modules' difference at the seam x = 2
    assert (at_seam > 1e-2).all()
    torch.testing.assert_close(hard_jump, at_seam)
    # the blend spreads the difference over the band's 2000 steps (taper slope <= 1.5)
    assert (soft_jump < 0.02 * at_seam).all(), (soft_jump, at_seam)
    # far from the seam the blend is exactly one module
    torch.testing.assert_close(soft[:500], hard[:500], rtol=0, atol=0)
    torch.testing.assert_close(soft[-500:], hard[-500:], rtol=0, atol=0)


def camera_above() -> SimpleNamespace:
    c2w = np.eye(4)
    c2w[:3, 3] = [2.0, 1.0, 6.0]  # above the box, looking down (-z): sees both blocks
    return SimpleNamespace(c2w=c2w, fx=24.0, fy=24.0, cx=12.0, cy=4.0, width=24, height=8)


@pytest.mark.parametrize("kind", ["mlp", "hash_grid"])
@pytest.mark.parametrize("importance", [0, 4])
def test_zero_margin_renders_bit_identical_to_hard_routing(importance, kind):
    cfg = field(0.0, importance, kind)
    params = two_modules(cfg)
    partition = two_blocks()

    def nearest(points: torch.Tensor) -> torch.Tensor:  # plain hard routing, no seam candidates
        return torch.as_tensor(partition.route_points(points.numpy()))

    hard = render_view(cfg, params, camera_above(), nearest, 0.1, 20.0)
    router = module_router(partition, [0, 1], modular=True)
    same = render_view(cfg, params, camera_above(), router, 0.1, 20.0)
    torch.testing.assert_close(same, hard, rtol=0, atol=0)
    blended = render_view(replace(cfg, seam_margin=0.2), params, camera_above(), router, 0.1, 20.0)
    assert not torch.equal(blended, hard)  # the same camera sees the seam


@pytest.mark.parametrize("kind", ["mlp", "hash_grid"])
@pytest.mark.parametrize("importance", [0, 4])
def test_rays_outside_the_blend_band_render_as_hard_routing(importance, kind):
    """Vertical rays whose samples all lie farther than the band from the seam: with blending on
    they render bit for bit as hard routing; rays through the band differ."""
    cfg = field(0.2, importance, kind)
    params = two_modules(cfg)
    router = partition_router(two_blocks())
    x = torch.tensor([0.3, 1.0, 1.7, 1.85, 2.15, 2.4, 3.6])  # band: |x - 2| < 0.2
    origins = torch.stack([x, torch.full_like(x, 0.9), torch.full_like(x, 3.0)], -1)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand(7, 3)
    outside = torch.tensor([True, True, True, False, False, True, True])
    with torch.no_grad():
        hard = render_rays_routed(
            replace(cfg, seam_margin=0.0), params, origins, directions, 1.0, 3.0, router
        )
        alone = render_rays_routed(
            cfg, params, origins[outside], directions[outside], 1.0, 3.0, router
        )
        mixed = render_rays_routed(cfg, params, origins, directions, 1.0, 3.0, router)
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(alone[key], hard[key][outside], rtol=0, atol=0)
        # in one chunk with seam rays the stacked call is wider: equal up to float rounding
        torch.testing.assert_close(mixed[key][outside], hard[key][outside])
    assert not torch.allclose(mixed["rgb"][~outside], hard["rgb"][~outside])


def test_blending_needs_a_router_that_knows_the_blocks_and_one_network_has_no_seams():
    cfg = field(0.2)
    params = two_modules(cfg)
    origins, directions = torch.tensor([[2.0, 1.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])

    def plain(points: torch.Tensor) -> torch.Tensor:
        return (points[:, 0] > 2.0).long()

    with pytest.raises(ValueError, match="seam_margin > 0 needs a router"):
        render_rays_routed(cfg, params, origins, directions, 1.0, 3.0, plain)
    one = module_router(two_blocks(), [0, 1], modular=False)
    ids, weights = one.candidates(torch.rand(5, 3), 0.2)
    assert ids.tolist() == [[0]] * 5 and weights.tolist() == [[1.0]] * 5


def test_a_seam_margin_wider_than_the_overlap_is_named():
    partition = two_blocks(margin=0.1)  # blocks overlap by 0.2 = 0.1 block sizes
    assert seam_margin_problem(partition, 0.1) is None
    assert "keep seam_margin <= 0.1" in seam_margin_problem(partition, 0.2)
