"""Hierarchical sampling as an option of the radiance field (``num_importance_samples``): its
samples go where the field's mass is, training and images share it, and the core's inner loop,
FIM loss and routed rendering run on it."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mclnf_dist.fields.stacked_mlp import FieldConfig, forward
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.inner_loop import loss_and_grads, per_sample_loss
from mclnf_dist.nerf.field import (
    RadianceFieldConfig,
    init_radiance_params,
    pack_rays,
    sample_points,
)
from mclnf_dist.nerf.render import render_rays_routed, render_view

BOX = ((0.0, 0.0, 0.0), (2.0, 2.0, 2.0))


def field(samples: int = 8, importance: int = 8, perturb: bool = False) -> RadianceFieldConfig:
    mlp = FieldConfig(kind="relu_pe", depth=3, width=16, pe_frequencies=3, output_offset=0.0)
    return RadianceFieldConfig(
        mlp=mlp,
        num_samples=samples,
        num_importance_samples=importance,
        perturb=perturb,
        scene_box=BOX,
        background=(0.2, 0.5, 0.9),
    )


def downward_rays(count: int, seed: int = 0) -> torch.Tensor:
    """(count, 8) packed rays from z = 2 straight down to z = 0 (depth t sees z = 2 - t)."""
    generator = torch.Generator().manual_seed(seed)
    origins = torch.cat(
        [torch.rand(count, 2, generator=generator) * 2, torch.full((count, 1), 2.0)], 1
    )
    directions = torch.tensor([0.0, 0.0, -1.0]).expand(count, 3)
    return pack_rays(origins, directions, 0.0, 2.0)


def slab_raw(points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Raw outputs of a field that is dense only in the slab 0.9 < z < 1.1 (a thin floor)."""
    inside = (points[..., 2] - 1.0).abs() < 0.1
    raw = torch.zeros(*points.shape[:-1], 4)
    raw[..., 0] = torch.where(inside, 20.0, -20.0)
    return raw


@pytest.mark.parametrize("perturb", [False, True])
def test_importance_samples_land_where_the_coarse_weights_are(perturb):
    cfg = field(samples=16, importance=32, perturb=perturb)
    rays = downward_rays(5)
    torch.manual_seed(7)  # the same stratified jitter for both calls
    t_vals, points = sample_points(cfg, rays, slab_raw)
    torch.manual_seed(7)
    coarse, _ = sample_points(field(samples=16, importance=0, perturb=perturb), rays)
    assert t_vals.shape == (5, 48) and points.shape == (5, 48, 3)
    assert (t_vals.diff(dim=-1) >= 0).all() and (t_vals >= 0).all() and (t_vals <= 2).all()
    torch.testing.assert_close(points[..., 2], 2.0 - t_vals)
    assert all(torch.isin(c, t).all() for c, t in zip(coarse, t_vals, strict=True))
    # the coarse weight sits on the intervals of the coarse samples inside the slab (each owns the
    # interval up to the next sample), so the 32 importance samples concentrate there
    first_inside = torch.where((coarse - 1.0).abs() < 0.1, coarse, torch.inf).min(dim=1).values
    following = torch.where(coarse > 1.1, coarse, torch.inf).min(dim=1).values
    low, high = first_inside[:, None], following[:, None]
    in_interval = ((t_vals >= low) & (t_vals <= high)).sum(dim=1)
    assert (in_interval >= 30).all(), in_interval
    uniform_share = 48 * (high - low).squeeze(1) / 2.0
    assert (in_interval > 4 * uniform_share).all()


def test_without_importance_samples_the_field_never_asks_for_a_coarse_pass():
    cfg = field(samples=8, importance=0)

    def forbidden(points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        raise AssertionError("no coarse pass without importance samples")

    t_vals, _ = sample_points(cfg, downward_rays(3), forbidden)
    assert t_vals.shape == (3, 8) and cfg.samples_per_item == 8
    with pytest.raises(ValueError, match="coarse"):
        sample_points(field(importance=4), downward_rays(3))


def test_training_and_images_render_the_same_rays_the_same_way():
    """The field interface (training) and routed rendering (images) share one sampler."""
    cfg = field(samples=8, importance=8)
    params = init_radiance_params(cfg, 1, torch.Generator().manual_seed(1))
    rays = downward_rays(6)
    trained = forward(cfg, params, rays.reshape(1, 6, 8))[0]
    origins, directions, near, far = rays[:, :3], rays[:, 3:6], rays[:, 6], rays[:, 7]

    def one_module(points: torch.Tensor) -> torch.Tensor:
        return torch.zeros(points.shape[0], dtype=torch.int64)

    with torch.no_grad():
        imaged = render_rays_routed(cfg, params, origins, directions, near, far, one_module)
    torch.testing.assert_close(imaged["rgb"], trained)
    coarse_only = forward(field(samples=8, importance=0), params, rays.reshape(1, 6, 8))[0]
    assert not torch.allclose(coarse_only, trained)  # the extra samples change the quadrature


def test_inner_loop_fim_and_views_run_with_importance_samples():
    cfg = field(samples=8, importance=8, perturb=True)
    assert cfg.samples_per_item == 16 and cfg.rows_per_chunk == cfg.mlp.rows_per_chunk // 16
    params = init_radiance_params(cfg, 2, torch.Generator().manual_seed(2))
    x = downward_rays(10).reshape(2, 5, 8)
    y = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(3))
    with torch.random.fork_rng():  # seeds the global RNG here only
        # the same jittered samples (one seed) for the reference and both losses
        torch.manual_seed(5)
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        mse = per_sample_loss(forward(cfg, leaves, x), y).mean(-1)
        reference = torch.autograd.grad(mse.sum(), list(leaves.values()))
        expected = dict(zip(leaves, reference, strict=True))
        # FIM weights mixed fully to uniform (beta = 1) take the FIM's own Gram-matrix path over the
        # 16 points of a ray and must give the MSE gradient; lambda = 1 must not
        for fim in (None, FimConfig(fim_lambda=1.0, beta=1.0)):
            torch.manual_seed(5)
            loss, grads = loss_and_grads(cfg, params, x, y, fim)
            torch.testing.assert_close(loss, mse.detach())
            assert set(grads) == set(params)
            for key in params:
                torch.testing.assert_close(grads[key], expected[key])
        torch.manual_seed(5)
        _, weighted = loss_and_grads(cfg, params, x, y, FimConfig(fim_lambda=1.0))
        assert any(not torch.allclose(weighted[k], expected[k]) for k in params)
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 1.0, 4.0]  # above the box, looking down (-z)
    frame = SimpleNamespace(c2w=c2w, fx=4.0, fy=4.0, cx=4.0, cy=3.0, width=8, height=6)

    def by_x(points: torch.Tensor) -> torch.Tensor:
        return (points[:, 0] > 1.0).long()

    image = render_view(cfg, params, frame, by_x, near=0.1, far=10.0)
    assert image.shape == (6, 8, 3) and 0 <= image.min() and image.max() <= 1
    torch.testing.assert_close(image[0, 0], torch.tensor(cfg.background))  # misses the box
