"""Per-image appearance codes of the grid field (NeRF-W, Block-NeRF): each training image's rays
use its own code, a ray with no training image (held-out views, renders) the mean code, and the
codes let one field fit two exposures of the same scene that a field without them cannot."""

import dataclasses

import torch

from mclnf_dist.fields.grid_field import GridFieldConfig
from mclnf_dist.fields.hash_grid import HashGridConfig
from mclnf_dist.fields.stacked_mlp import evaluate
from mclnf_dist.meta.inner_loop import per_sample_loss
from mclnf_dist.meta.meta_learning import mse_to_psnr
from mclnf_dist.nerf.field import (
    RadianceFieldConfig,
    appearance_codes,
    init_radiance_params,
    pack_rays,
)

BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def field(appearance: int) -> RadianceFieldConfig:
    grid = HashGridConfig(levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)
    net = GridFieldConfig(grid=grid, hidden_width=16, appearance_features=appearance)
    return RadianceFieldConfig(
        kind="hash_grid", grid=net, num_samples=8, scene_box=BOX, appearance_images=2
    )


def test_codes_are_looked_up_per_image_and_the_mean_serves_the_rest():
    table = torch.arange(12.0).reshape(1, 3, 4)  # one module, 3 images, 4 features
    ids = torch.tensor([[0.0, 2.0, -1.0, 7.0]])  # own, own, none, unknown
    codes = appearance_codes({"appearance_codes": table}, ids)
    assert torch.equal(codes[0, 0], table[0, 0]) and torch.equal(codes[0, 1], table[0, 2])
    assert torch.equal(codes[0, 2], table[0].mean(0)) and torch.equal(codes[0, 3], codes[0, 2])
    two = appearance_codes({"appearance_codes": table}, ids.expand(2, -1))  # shared by 2 modules
    assert two.shape == (2, 4, 4) and torch.equal(two[0], two[1])


def fit(cfg: RadianceFieldConfig, x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> dict:
    torch.manual_seed(0)
    params = init_radiance_params(cfg, 1, torch.Generator().manual_seed(0))
    params = {k: v.requires_grad_() for k, v in params.items()}
    adam = torch.optim.Adam(list(params.values()), lr=2e-2)
    for _ in range(steps):
        loss = per_sample_loss(evaluate(cfg, params, x), y).mean()
        adam.zero_grad()
        loss.backward()
        adam.step()
    return params


def test_codes_fit_two_exposures_that_one_shared_appearance_cannot():
    generator = torch.Generator().manual_seed(1)
    origins = torch.zeros(256, 3)
    directions = torch.nn.functional.normalize(torch.randn(128, 3, generator=generator), dim=-1)
    directions = directions.repeat(2, 1)  # the very same rays in both photos
    image = torch.arange(256) // 128  # two photos of one scene, the second 40 % darker
    colour = 0.5 + 0.4 * directions.abs()  # a scene whose colour varies with where one looks
    target = torch.where(image[:, None] == 0, colour, 0.6 * colour)[None]
    x = pack_rays(origins, directions, 0.05, 0.95, image)[None]
    with_codes = field(appearance=4)
    params = fit(with_codes, x, target)
    no_codes = dataclasses.replace(with_codes.grid, appearance_features=0)
    without = dataclasses.replace(with_codes, grid=no_codes)
    shared = fit(without, x, target)
    with torch.no_grad():
        evaluation = with_codes.for_evaluation()
        own = mse_to_psnr(per_sample_loss(evaluate(evaluation, params, x), target).mean())
        one = mse_to_psnr(per_sample_loss(evaluate(without.for_evaluation(), shared, x),
                                          target).mean())  # fmt: skip
        held_out = evaluate(evaluation, params, x[..., :8])  # no image: the mean code
    assert own > one + 6.0, (float(own), float(one))  # the codes explain the exposure change
    bright = held_out[0, image == 0].mean()
    assert 0.6 * colour.mean() < bright < colour.mean()  # between the two exposures
