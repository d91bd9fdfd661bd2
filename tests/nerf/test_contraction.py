"""Unbounded scenes: the contraction maps all space beyond the box into a bounded shell, rays
sample inside the box and in disparity beyond it, and a field can then learn what lies outside
the box (a room around a filmed object) that a bounded field can only show as background."""

import torch

from mclnf_dist.fields.grid_field import GridFieldConfig
from mclnf_dist.fields.hash_grid import HashGridConfig
from mclnf_dist.fields.stacked_mlp import evaluate
from mclnf_dist.meta.inner_loop import per_sample_loss
from mclnf_dist.meta.meta_learning import mse_to_psnr
from mclnf_dist.nerf.field import (
    RadianceFieldConfig,
    contract,
    init_radiance_params,
    normalise_points,
    pack_rays,
    unbounded_samples,
)

BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def test_contraction_is_the_identity_inside_continuous_and_bounded():
    inside = torch.rand(100, 3) * 2 - 1
    assert torch.equal(contract(inside), inside)
    direction = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    direction = direction / direction.abs().amax(-1, keepdim=True)  # max-norm 1: on the box
    just_in, just_out = contract(direction * (1 - 1e-6)), contract(direction * (1 + 1e-6))
    assert (just_in - just_out).abs().max() < 1e-5  # no jump at the box's surface
    radii = torch.tensor([1.0, 2.0, 10.0, 1e3, 1e6])
    norms = contract(direction[:1] * radii[:, None]).abs().amax(-1)
    assert torch.all(norms[1:] > norms[:-1]) and norms.max() < 2.0  # monotone, below 2
    field = RadianceFieldConfig(scene_box=BOX, contraction=True)
    far_point = torch.tensor([[1e5, 0.0, 0.0]])
    assert normalise_points(field, far_point).abs().max() <= 1.0  # the network's [-1, 1]


def test_unbounded_samples_fill_the_box_then_go_out_in_disparity():
    field = RadianceFieldConfig(scene_box=BOX, contraction=True, num_samples=16, perturb=False)
    origins = torch.zeros(4, 3)
    directions = torch.eye(3)[[0, 1, 2, 0]]
    near, far = torch.full((4,), 0.1), torch.full((4,), 100.0)
    t_vals = unbounded_samples(field, origins, directions, near, far)
    assert t_vals.shape == (4, 16) and torch.all(t_vals[:, 1:] >= t_vals[:, :-1])
    assert torch.all(t_vals[:, :8] <= 1.0) and torch.all(t_vals[:, 8:] >= 1.0)  # box exit at 1
    assert torch.all(t_vals >= 0.1) and torch.all(t_vals < 100.0)
    gaps = t_vals[0, 9:] - t_vals[0, 8:-1]
    assert gaps[-1] > 10 * gaps[0]  # evenly in disparity: sparser far away


def test_a_contracted_field_learns_the_room_beyond_the_box():
    """Rays from the middle of a small box to a coloured wall 20 units away: the bounded field
    can only paint the room onto the box (rays stop there), the contracted one learns it."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(256, 3, generator=generator), dim=-1)
    wall = 0.2 + 0.6 * (directions > 0).float()  # a colour per octant of the surrounding room
    x = pack_rays(torch.zeros(256, 3), directions, 0.05, 20.0)[None]
    grid = HashGridConfig(levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)
    scores = {}
    for contraction in (False, True):
        net = GridFieldConfig(grid=grid)
        field = RadianceFieldConfig(
            kind="hash_grid", grid=net, num_samples=16, scene_box=BOX, contraction=contraction
        )
        if not contraction:  # the box clips the rays: [near, where they leave the box]
            x_field = pack_rays(torch.zeros(256, 3), directions, 0.05, 1.0)[None]
        else:
            x_field = x
        torch.manual_seed(0)
        params = init_radiance_params(field, 1, torch.Generator().manual_seed(1))
        params = {k: v.requires_grad_() for k, v in params.items()}
        adam = torch.optim.Adam(list(params.values()), lr=2e-2)
        for _ in range(150):
            loss = per_sample_loss(evaluate(field, params, x_field), wall[None]).mean()
            adam.zero_grad()
            loss.backward()
            adam.step()
        with torch.no_grad():
            prediction = evaluate(field.for_evaluation(), params, x_field)
            scores[contraction] = float(mse_to_psnr(per_sample_loss(prediction, wall[None]).mean()))
    assert scores[True] > 25.0 and scores[True] > scores[False] + 3.0, scores
