"""Proposal sampling for the grid field (mip-NeRF 360 / nerfacto): the interlevel loss bounds
the field's weights by the proposal's, a proposal trained by it moves the field's samples onto
the surface, the FIM gradient is exact for every parameter (tables and proposal included), and
training, meta-gradients and routed images all run with it; mip-NeRF 360's distortion loss
equals its double sum and joins the per-ray penalty at its weight."""

import dataclasses

import pytest
import torch

from mclnf_dist.config_rules import rule_problem
from mclnf_dist.fields.grid_field import GridFieldConfig, ProposalConfig
from mclnf_dist.fields.hash_grid import HashGridConfig
from mclnf_dist.fields.stacked_mlp import forward_with_penalty
from mclnf_dist.meta.fim import FimConfig, fim_weights, fisher_trace
from mclnf_dist.meta.inner_loop import fim_loss_and_grads, sample_losses
from mclnf_dist.meta.meta_learning import MetaConfig, meta_gradient, signal_episode
from mclnf_dist.nerf.field import (
    RadianceFieldConfig,
    init_radiance_params,
    pack_rays,
    proposal_samples,
)
from mclnf_dist.nerf.render import render_rays_routed
from mclnf_dist.nerf.sampling import distortion_loss, interlevel_loss

BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def proposal_field(proposal_samples: int = 24, samples: int = 8) -> RadianceFieldConfig:
    grid = HashGridConfig(levels=4, log2_table_size=10, features_per_level=2, base_resolution=4,
                          finest_resolution=32)  # fmt: skip
    small = HashGridConfig(levels=2, log2_table_size=8, features_per_level=2, base_resolution=4,
                           finest_resolution=16)  # fmt: skip
    proposal = ProposalConfig(samples=proposal_samples, grid=small, hidden_width=8)
    net = GridFieldConfig(grid=grid, hidden_width=16, geometry_features=4, sh_degree=2,
                          proposal=proposal)  # fmt: skip
    return RadianceFieldConfig(kind="hash_grid", grid=net, num_samples=samples, scene_box=BOX)


def downward_rays(count: int, seed: int = 0) -> torch.Tensor:
    """Vertical rays from z = 0.9 down to z = -0.9 at random (x, y) in [-0.8, 0.8]^2."""
    generator = torch.Generator().manual_seed(seed)
    xy = (torch.rand(count, 2, generator=generator) - 0.5) * 1.6
    origins = torch.cat([xy, torch.full((count, 1), 0.9)], dim=-1)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand(count, 3)
    return pack_rays(origins, directions, 0.0, 1.8)


def naive_bound(fine_edges, coarse_edges, coarse_weights):
    """The coarse weight over every coarse interval that overlaps each fine interval."""
    bound = torch.zeros(fine_edges.shape[0], fine_edges.shape[1] - 1)
    for ray in range(fine_edges.shape[0]):
        for i in range(fine_edges.shape[1] - 1):
            a, b = fine_edges[ray, i], fine_edges[ray, i + 1]
            for j in range(coarse_edges.shape[1] - 1):
                lo, hi = coarse_edges[ray, j], coarse_edges[ray, j + 1]
                if lo < b and hi > a:
                    bound[ray, i] += coarse_weights[ray, j]
    return bound


def test_interlevel_loss_equals_a_naive_overlap_sum_and_trains_only_the_proposal():
    generator = torch.Generator().manual_seed(0)
    coarse_edges = torch.sort(torch.rand(5, 9, generator=generator), dim=-1).values
    fine_edges = torch.sort(torch.rand(5, 13, generator=generator), dim=-1).values
    # inside the coarse segment, as the field's samples are inside the proposal's
    low, high = coarse_edges[:, :1], coarse_edges[:, -1:]
    fine_edges = low + (high - low) * fine_edges
    coarse_weights = torch.rand(5, 8, generator=generator).requires_grad_()
    fine_weights = torch.rand(5, 12, generator=generator).requires_grad_()
    loss = interlevel_loss(fine_edges, fine_weights, coarse_edges, coarse_weights)
    bound = naive_bound(fine_edges, coarse_edges, coarse_weights.detach())
    target = fine_weights.detach()
    expected = ((target - bound).clamp_min(0).square() / (target + 1e-7)).sum(-1)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert (loss > 0).any()
    loss.sum().backward()
    assert fine_weights.grad is None  # the field's weights are the target
    assert coarse_weights.grad.abs().sum() > 0
    # a proposal whose every interval holds all the mass bounds anything: no loss
    everything = torch.ones(5, 8)
    assert interlevel_loss(fine_edges, fine_weights, coarse_edges, everything).abs().max() == 0


def slab_rays(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from above at random tilts onto a textured opaque slab at z = 0, and their colours
    (the texture at the hit point): only mass at z = 0 explains every view."""
    generator = torch.Generator().manual_seed(seed)
    origins = torch.cat(
        [(torch.rand(count, 2, generator=generator) - 0.5) * 0.8, torch.full((count, 1), 0.9)], -1
    )
    tilt = (torch.rand(count, 2, generator=generator) - 0.5) * 2.0
    directions = torch.nn.functional.normalize(torch.cat([tilt, -torch.ones(count, 1)], -1), dim=-1)
    hit = origins + directions * (0.9 / -directions[:, 2:3])
    colour = torch.stack(
        [0.5 + 0.4 * torch.sin(9 * hit[:, 0]), 0.5 + 0.4 * torch.cos(9 * hit[:, 1]),
         0.3 + 0.0 * hit[:, 0]], dim=-1,
    )  # fmt: skip
    far = 1.7 / -directions[:, 2]  # down to z = -0.8
    return pack_rays(origins, directions, 0.0, far), colour


def test_a_trained_proposal_puts_the_fields_samples_on_the_surface():
    """After training with the interlevel loss the field's samples crowd around the slab,
    while the same field's initial samples spread over the whole ray."""
    torch.manual_seed(0)
    field = proposal_field()
    params = init_radiance_params(field, 1, torch.Generator().manual_seed(1))
    params = {k: v.requires_grad_() for k, v in params.items()}
    adam = torch.optim.Adam(params.values(), lr=1e-2)
    rays, target = slab_rays(512, 3)

    def spread(p) -> float:
        """Mean |z| of the field's samples: their distance from the slab."""
        with torch.no_grad():
            evaluation = field.for_evaluation()
            _, points, _ = proposal_samples(
                evaluation, rays, lambda pts: proposal_density_of(evaluation, p, pts)
            )
        return float(points[..., 2].abs().mean())

    before = spread(params)
    for _ in range(300):
        pick = torch.randint(0, 512, (128,))
        loss = sample_losses(field, params, rays[pick][None], target[pick][None]).mean()
        adam.zero_grad()
        loss.backward()
        adam.step()
    after = spread(params)
    assert before > 0.35, before  # spread over z in [-0.8, 0.9]
    assert after < 0.65 * before, (before, after)  # measured: 0.44 -> 0.23
    prediction, penalty = forward_with_penalty(field.for_evaluation(), params, rays[None])
    assert (prediction[0] - target).square().mean() < 0.01
    assert penalty is not None and penalty.mean() < 0.05


def proposal_density_of(field, params, points):
    from mclnf_dist.nerf.field import normalise_points

    inputs = normalise_points(field, points).reshape(1, -1, 3)
    return field.proposal_network(params, inputs).reshape(points.shape[:-1])


def test_fim_gradient_of_every_parameter_is_the_weighted_losss_gradient():
    """Tables, proposal and MLPs: fim_loss_and_grads equals autograd of sum_j w_j l_j with the
    FIM weights held constant (an exact FIM loss for every parameter of the grid field)."""
    field = dataclasses.replace(proposal_field(), perturb=False)
    fim = FimConfig(fim_lambda=1.0)
    params = init_radiance_params(field, 2, torch.Generator().manual_seed(4))
    params["proposal_b1"] = params["proposal_b1"] - 4.0  # a thin proposal: its loss is active
    params = {k: v.requires_grad_() for k, v in params.items()}
    x = downward_rays(20, 5).reshape(2, 10, 8)
    y = torch.rand(2, 10, 3, generator=torch.Generator().manual_seed(6))
    loss, grads = fim_loss_and_grads(field, params, x, y, fim, create_graph=False)
    assert set(grads) == set(params)
    cache: list = []
    losses = sample_losses(field, params, x, y, cache)
    pre = torch.autograd.grad(losses.mean(-1).sum(), [z for _, z in cache], retain_graph=True)
    weights = fim_weights(fisher_trace(cache, [g * 10 for g in pre], field.samples_per_item), fim)
    assert weights.std() > 0.01  # the weights really weight
    expected = torch.autograd.grad((weights * losses).mean(-1).sum(), list(params.values()))
    assert torch.allclose(loss, (weights * losses).mean(-1).detach())
    for key, want in zip(params, expected, strict=True):
        assert torch.allclose(grads[key], want, rtol=1e-4, atol=1e-7), key
        assert want.abs().sum() > 0, key


@pytest.mark.parametrize("algorithm", ["fomaml", "maml"])
def test_meta_gradient_reaches_the_proposal_network(algorithm):
    field = proposal_field(proposal_samples=8, samples=4)
    meta = MetaConfig(algorithm=algorithm, inner_steps=1, inner_lr=0.1)
    theta0 = init_radiance_params(field, 1, torch.Generator().manual_seed(7))
    theta0["proposal_b1"] = theta0["proposal_b1"] - 4.0  # a thin proposal: its loss is active
    coords = downward_rays(16, 8).reshape(2, 8, 8)
    values = slab_rays(16, 8)[1].reshape(1, 2, 8, 3)
    episode = signal_episode("modular", meta, theta0, coords, values)
    grads, metrics = meta_gradient(field, meta, None, theta0, episode)
    assert set(grads) == set(theta0)
    assert grads["proposal_tables"].abs().sum() > 0
    assert grads["proposal_w0"].abs().sum() > 0
    assert metrics["outer_psnr"] > 0


def test_routed_images_sample_with_the_routed_proposal():
    """Two modules, each a proposal field; rendering routes the proposal's points like the
    field's and equals the training path's colours for rays inside one module's block."""
    field = dataclasses.replace(proposal_field(), perturb=False)
    params = init_radiance_params(field, 2, torch.Generator().manual_seed(9))
    rays = downward_rays(12, 10)
    with torch.no_grad():
        routed = render_rays_routed(
            field, params, rays[:, :3], rays[:, 3:6], rays[:, 6], rays[:, 7],
            lambda points: torch.ones(points.shape[0], dtype=torch.int64), chunk=5,
        )  # fmt: skip
        module_one = {k: v[1:] for k, v in params.items()}
        trained, _ = forward_with_penalty(field, module_one, rays[None])
    assert torch.allclose(routed["rgb"], trained[0], atol=1e-5)


def test_a_proposal_with_importance_samples_is_refused():
    field = dataclasses.replace(proposal_field(), num_importance_samples=4)
    problem = rule_problem(field, "field.")
    assert problem is not None and "num-importance-samples must be 0" in problem, problem


def test_a_saved_field_with_a_proposal_reads_back_equal():
    """What a saved city model stores (``dataclasses.asdict``) reads back as the same field."""
    from mclnf_dist.nerf.field import field_from_dict

    field = proposal_field()
    assert field_from_dict(dataclasses.asdict(field)) == field
    plain = dataclasses.asdict(RadianceFieldConfig(kind="hash_grid"))
    del plain["grid"]["proposal"]  # a model saved before proposals existed
    assert field_from_dict(plain).grid.proposal.samples == 0


def naive_distortion(edges: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 d_i, per ray, by loops over the pairs."""
    out = torch.zeros(edges.shape[0], dtype=torch.float64)
    for ray in range(edges.shape[0]):
        s = (edges[ray] - edges[ray, 0]) / (edges[ray, -1] - edges[ray, 0])
        mids, widths = 0.5 * (s[1:] + s[:-1]), s[1:] - s[:-1]
        for i in range(weights.shape[1]):
            for j in range(weights.shape[1]):
                out[ray] += weights[ray, i] * weights[ray, j] * (mids[i] - mids[j]).abs()
            out[ray] += weights[ray, i] ** 2 * widths[i] / 3.0
    return out


def test_distortion_loss_equals_the_double_sum_and_ignores_scene_units():
    generator = torch.Generator().manual_seed(0)
    edges = torch.sort(torch.rand(6, 13, generator=generator, dtype=torch.float64) * 5 + 1)[0]
    weights = torch.rand(6, 12, generator=generator, dtype=torch.float64) / 6
    loss = distortion_loss(edges, weights)
    assert torch.allclose(loss, naive_distortion(edges, weights), rtol=1e-12)
    assert torch.allclose(distortion_loss(edges * 7.5 + 3.0, weights), loss, rtol=1e-12)


def test_weight_in_one_interval_costs_less_than_the_same_weight_spread():
    edges = torch.linspace(0.0, 1.0, 17)[None]
    compact = torch.zeros(1, 16)
    compact[0, 7] = 0.9
    spread = torch.full((1, 16), 0.9 / 16)
    assert distortion_loss(edges, compact) < 0.2 * distortion_loss(edges, spread)


def test_the_fields_penalty_adds_the_weighted_distortion_loss():
    """With a proposal the per-ray penalty is interlevel + weight * distortion; the difference
    of two weights is the distortion loss itself, and it has a gradient for the tables."""
    base = dataclasses.replace(proposal_field(), perturb=False)
    params = init_radiance_params(base, 1, torch.Generator().manual_seed(1))
    params["density_b1"] = params["density_b1"] + 2.0  # some density: the weights are not all zero
    x = downward_rays(12, 2)[None]
    penalties = {}
    for weight in (0.0, 0.5):
        field = dataclasses.replace(base, distortion_loss_weight=weight)
        _, penalties[weight] = forward_with_penalty(field, params, x)
    extra = penalties[0.5] - penalties[0.0]
    assert extra.min() > 0
    plain = dataclasses.replace(base.grid, proposal=dataclasses.replace(base.grid.proposal,
                                                                         samples=0))  # fmt: skip
    stratified = dataclasses.replace(base, grid=plain, distortion_loss_weight=0.5)
    params = {k: v.requires_grad_() for k, v in params.items()}
    _, penalty = forward_with_penalty(stratified, params, x)
    assert penalty is not None and penalty.min() > 0
    (grad,) = torch.autograd.grad(penalty.sum(), [params["hash_tables"]])
    assert grad.abs().sum() > 0
