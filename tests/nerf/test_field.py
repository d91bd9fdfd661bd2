"""The radiance field implements the field interface: shapes, background, routing, the core's
inner loop, FIM loss and second-order meta-gradient on rays."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mclnf_dist.fields.stacked_mlp import FieldConfig, evaluate, forward, mlp_forward
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.inner_loop import loss_and_grads, per_sample_loss
from mclnf_dist.meta.meta_learning import Episode, MetaConfig, adapt_episode, meta_gradient
from mclnf_dist.nerf.field import (
    RadianceFieldConfig,
    composite,
    field_for_scene,
    init_radiance_params,
    normalise_points,
    pack_rays,
    sample_points,
    unpack_rays,
)
from mclnf_dist.nerf.render import (
    partition_router,
    render_rays_routed,
    render_view,
    to_uint8,
)
from mclnf_dist.scenes.partition import BlockPartition

BOX = ((0.0, 0.0, 0.0), (4.0, 2.0, 2.0))


def small_field(samples: int = 8, kind: str = "relu_pe", **kwargs) -> RadianceFieldConfig:
    mlp = FieldConfig(kind=kind, depth=3, width=16, w0=3.0, pe_frequencies=3, output_offset=0.0)
    return RadianceFieldConfig(
        mlp=mlp, num_samples=samples, scene_box=BOX, background=(0.2, 0.5, 0.9), **kwargs
    )


def random_rays(count: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(count, 3) origins inside the box, unit directions, near 0.1 and far in [1, 3]."""
    generator = torch.Generator().manual_seed(seed)
    origins = torch.rand(count, 3, generator=generator) * torch.tensor([4.0, 2.0, 2.0])
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    far = 1.0 + 2.0 * torch.rand(count, generator=generator)
    return origins, directions, torch.full((count,), 0.1), far


def params_for(cfg: RadianceFieldConfig, modules: int = 1, seed: int = 0):
    return init_radiance_params(cfg, modules, torch.Generator().manual_seed(seed))


def test_packing_and_shapes():
    cfg = small_field(samples=8)
    origins, directions, near, far = random_rays(10)
    x = pack_rays(origins, directions, near, far).reshape(2, 5, 8)
    back = unpack_rays(x.reshape(10, 8))
    for got, want in zip(back, (origins, directions, near, far), strict=True):
        torch.testing.assert_close(got, want)
    assert pack_rays(origins, directions, 0.5, 2.0)[:, 6:].unique().tolist() == [0.5, 2.0]
    points, _ = cfg.mlp_inputs(x)
    assert points.shape == (2, 40, 3)
    assert cfg.samples_per_item == 8 and cfg.rows_per_chunk == cfg.mlp.rows_per_chunk // 8
    out = forward(cfg, params_for(cfg, 2), x)
    assert out.shape == (2, 5, 3) and out.min() >= 0 and out.max() <= 1
    # the box's corners map to -1 and +1
    corners = normalise_points(cfg, torch.tensor(BOX))
    torch.testing.assert_close(corners, torch.tensor([[-1.0] * 3, [1.0] * 3]))


def test_samples_lie_on_the_ray_inside_its_bounds():
    cfg = small_field(samples=16)
    origins, directions, near, far = random_rays(6)
    t_vals, points = sample_points(cfg, pack_rays(origins, directions, near, far))
    assert (t_vals >= near[:, None]).all() and (t_vals < far[:, None]).all()
    assert (t_vals.diff(dim=-1) >= 0).all()
    expected = origins[:, None] + t_vals[..., None] * directions[:, None]
    torch.testing.assert_close(points, expected)
    deterministic, _ = sample_points(
        cfg.for_evaluation(), pack_rays(origins, directions, near, far)
    )
    torch.testing.assert_close(deterministic[:, 0], near)  # bins start at near when not jittered


def test_empty_space_renders_the_background():
    cfg = small_field().for_evaluation()
    params = params_for(cfg)
    last = f"b{len(params) // 2 - 1}"
    empty = params[last].clone()
    empty[..., 0] = -1e4  # softplus(-1e4) = 0: no density anywhere
    params = {**params, last: empty}
    x = pack_rays(*random_rays(7)).reshape(1, 7, 8)
    out = forward(cfg, params, x)
    torch.testing.assert_close(out, torch.tensor(cfg.background).expand(1, 7, 3))
    # a ray that misses the box (near == far) is transparent whatever the field holds
    missed = pack_rays(*random_rays(3)[:2], 2.0, 2.0).reshape(1, 3, 8)
    dense = forward(cfg, params_for(cfg), missed)
    torch.testing.assert_close(dense, torch.tensor(cfg.background).expand(1, 3, 3))


def test_forward_equals_routed_rendering_through_one_module():
    cfg = small_field().for_evaluation()
    params = params_for(cfg, modules=3)
    origins, directions, near, far = random_rays(20)
    x = pack_rays(origins, directions, near, far)
    one = {k: v[2:3] for k, v in params.items()}
    expected = forward(cfg, one, x[None])[0]

    def to_module_2(points: torch.Tensor) -> torch.Tensor:
        return torch.full((points.shape[0],), 2, dtype=torch.int64)

    routed = render_rays_routed(cfg, params, origins, directions, near, far, to_module_2, chunk=7)
    torch.testing.assert_close(routed["rgb"], expected)
    assert routed["depth"].shape == (20,) and routed["opacity"].shape == (20,)


def test_each_sample_point_is_rendered_by_its_blocks_module():
    cfg = small_field().for_evaluation()
    params = params_for(cfg, modules=2)
    origins, directions, near, far = random_rays(15)

    def by_x(points: torch.Tensor) -> torch.Tensor:  # two blocks split at x = 2
        return (points[:, 0] > 2.0).long()

    routed = render_rays_routed(cfg, params, origins, directions, near, far, by_x, chunk=4)
    # reference: every point through every module, then pick each point's own module
    t_vals, points = sample_points(cfg, pack_rays(origins, directions, near, far))
    normalised = normalise_points(cfg, points).reshape(1, -1, 3).expand(2, -1, -1)
    raw_all = mlp_forward(cfg.mlp, params, normalised)  # (2, R*S, 4)
    ids = by_x(points.reshape(-1, 3))
    assert 0 < ids.sum() < ids.numel()  # rays really cross both blocks
    raw = raw_all[ids, torch.arange(ids.numel())].reshape(15, cfg.num_samples, 4)
    expected = composite(cfg, raw, t_vals, far)
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(routed[key], expected[key])


def test_chunked_equals_unchunked():
    cfg = small_field().for_evaluation()
    params = params_for(cfg, modules=3)
    x = pack_rays(*random_rays(24)).reshape(3, 8, 8)
    whole = forward(cfg, params, x)
    tiny_chunks = replace(cfg, mlp=replace(cfg.mlp, rows_per_chunk=cfg.num_samples))
    assert tiny_chunks.rows_per_chunk == 1
    torch.testing.assert_close(evaluate(tiny_chunks, params, x), whole)
    origins, directions, near, far = random_rays(24)

    def route_fn(points: torch.Tensor) -> torch.Tensor:
        return (points[:, 1] * 1.5).long().clamp(0, 2)

    big = render_rays_routed(cfg, params, origins, directions, near, far, route_fn, chunk=1000)
    small = render_rays_routed(cfg, params, origins, directions, near, far, route_fn, chunk=5)
    for key in big:
        torch.testing.assert_close(small[key], big[key])


def test_fim_loss_on_rays_equals_a_brute_force_per_ray_fisher_reference():
    """The Gram-matrix Fisher trace of a ray and the weighted gradient from one backward pass
    equal a reference that differentiates every ray's loss on its own: summing per-point traces
    instead of forming the ray's gradient, a missing bias term, or weights left undetached or
    unnormalised per module would all break it."""
    torch.set_default_dtype(torch.float64)
    try:
        cfg = small_field(samples=6).for_evaluation()  # fixed samples: the reference sees them too
        params = {k: v.double() for k, v in params_for(cfg, modules=2).items()}
        x = pack_rays(*random_rays(16)).double().reshape(2, 8, 8)
        y = torch.rand(2, 8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        fim = FimConfig(fim_lambda=1.0)
        loss, grads = loss_and_grads(cfg, params, x, y, fim)

        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        losses = per_sample_loss(forward(cfg, leaves, x), y)  # (2, 8)
        trace = torch.zeros(2, 8)
        for m in range(2):
            for j in range(8):
                ray = torch.autograd.grad(losses[m, j], list(leaves.values()), retain_graph=True)
                trace[m, j] = sum(float(g.square().sum()) for g in ray)
        weights = trace / trace.sum(-1, keepdim=True) * 8  # lambda = 1: F_j / mean F
        expected_loss = (weights * losses).mean(-1)
        expected = torch.autograd.grad(expected_loss.sum(), list(leaves.values()))
        torch.testing.assert_close(loss, expected_loss.detach())
        assert grads.keys() == params.keys()
        for key, grad in zip(leaves, expected, strict=True):
            torch.testing.assert_close(grads[key], grad)
        assert float(weights.max() / weights.min()) > 2  # the weights are far from uniform
    finally:
        torch.set_default_dtype(torch.float32)


def test_second_order_meta_gradient_on_rays_matches_finite_differences():
    torch.set_default_dtype(torch.float64)
    try:
        cfg = small_field(samples=5, kind="siren").for_evaluation()  # smooth: exact differences
        theta0 = {k: v.double() for k, v in params_for(cfg).items()}
        x = pack_rays(*random_rays(12)).double().reshape(2, 6, 8)
        y = torch.rand(2, 6, 3, generator=torch.Generator().manual_seed(4))
        episode = Episode(context=[(x[:, :4], y[:, :4])], query=(x, y))
        meta = MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.5)
        grads, metrics = meta_gradient(cfg, meta, None, theta0, episode)

        def outer(init):
            adapted = adapt_episode(cfg, meta, None, init, episode, first_order=False)
            return per_sample_loss(evaluate(cfg, adapted, x), y).mean()

        with torch.enable_grad():
            assert metrics["outer_loss"] == pytest.approx(float(outer(theta0).detach()), rel=1e-12)

        direction = {k: torch.randn_like(v) for k, v in theta0.items()}
        eps = 1e-6
        with torch.enable_grad():
            numeric = (
                outer({k: v + eps * direction[k] for k, v in theta0.items()})
                - outer({k: v - eps * direction[k] for k, v in theta0.items()})
            ) / (2 * eps)
        analytic = sum((grads[k] * direction[k]).sum() for k in grads)
        numeric = numeric.detach()
        print(f"meta-gradient . direction: analytic {float(analytic):.9f}, numeric {numeric:.9f}")
        assert abs(float(analytic - numeric)) < 1e-6 * max(1.0, abs(float(numeric)))
        fomaml, _ = meta_gradient(cfg, MetaConfig(algorithm="fomaml", inner_steps=2,
                                                  inner_lr=0.5), None, theta0, episode)  # fmt: skip
        assert any(not torch.allclose(fomaml[k], grads[k]) for k in grads)
        # The FIM loss's own second-order path (weighted GEMMs through the pre-activations, not
        # autograd of the MSE): with weights mixed fully to uniform (beta = 1) it must give the
        # MSE meta-gradient just checked against finite differences; dropping the graph of the
        # layer inputs or of the backward pass breaks this.
        uniform = FimConfig(fim_lambda=1.0, beta=1.0)
        fim, _ = meta_gradient(cfg, meta, uniform, theta0, episode)
        for key in grads:
            torch.testing.assert_close(fim[key], grads[key], rtol=1e-9, atol=1e-12)
        weighted, _ = meta_gradient(cfg, meta, FimConfig(fim_lambda=1.0), theta0, episode)
        assert any(not torch.allclose(weighted[k], grads[k]) for k in grads)  # weights matter
    finally:
        torch.set_default_dtype(torch.float32)


def test_render_view_routes_points_and_shows_the_sky():
    cfg = small_field()
    partition = BlockPartition(
        centroids=[[1.0, 1.0, 0.0], [3.0, 1.0, 0.0]], grid_shape=(2, 1),
        bounds=[[0.0, 0.0], [4.0, 2.0]], margin=0.0,
    )  # fmt: skip
    params = params_for(cfg, modules=2)
    c2w = np.eye(4)
    c2w[:3, 3] = [2.0, 1.0, 6.0]  # above the box, looking down (-z)
    frame = SimpleNamespace(c2w=c2w, fx=4.0, fy=4.0, cx=4.0, cy=3.0, width=8, height=6)
    image = render_view(cfg, params, frame, partition_router(partition), near=0.1, far=20.0)
    assert image.shape == (6, 8, 3) and 0 <= image.min() and image.max() <= 1
    # the corner pixels see past the box: sky
    torch.testing.assert_close(image[0, 0], torch.tensor(cfg.background))
    assert not torch.allclose(image[3, 4], torch.tensor(cfg.background))


def test_to_uint8_keeps_uint8_pixels():
    """Ground-truth frames arrive as uint8: they pass through unscaled (not divided again)."""
    truth = np.array([[[0, 128, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(truth), truth)
    np.testing.assert_array_equal(to_uint8(torch.tensor([[[0.0, 0.5, 1.0]]])), [[[0, 128, 255]]])


def test_field_for_scene_takes_box_and_sky():
    scene = SimpleNamespace(scene_box=None, background=np.ones(3))
    with pytest.raises(ValueError, match="scene_box"):
        field_for_scene(scene)
    scene.scene_box = np.array(BOX)
    cfg = field_for_scene(scene, num_samples=4)
    assert cfg.scene_box == BOX and cfg.background == (1.0, 1.0, 1.0) and cfg.num_samples == 4
