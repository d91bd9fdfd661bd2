"""The grid radiance field (``kind=hash_grid``) through the project's one training path: the FIM
weights are exact for the parameters they cover (the density and colour MLPs, by the closed form;
the hash tables have none and are left out), and the second-order meta-gradient through the hash
encoding matches finite differences on a tiny table."""

import dataclasses

import torch

from mclnf_dist.fields.grid_field import GridFieldConfig
from mclnf_dist.fields.hash_grid import HashGridConfig
from mclnf_dist.fields.stacked_mlp import evaluate, forward
from mclnf_dist.meta.fim import fisher_trace
from mclnf_dist.meta.inner_loop import per_sample_loss
from mclnf_dist.meta.meta_learning import MetaConfig, adapt_episode, meta_gradient, signal_episode
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params, pack_rays

BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def tiny_field(samples: int = 4) -> RadianceFieldConfig:
    grid = HashGridConfig(levels=3, log2_table_size=6, features_per_level=2, base_resolution=2,
                          finest_resolution=16, init_scale=0.5)  # fmt: skip
    net = GridFieldConfig(grid=grid, hidden_width=8, geometry_features=3, sh_degree=2)
    return RadianceFieldConfig(
        kind="hash_grid", grid=net, num_samples=samples, perturb=False, scene_box=BOX
    )


def random_rays(count: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    origins = (torch.rand(count, 3, generator=generator) - 0.5) * 0.5
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    return pack_rays(origins, directions, 0.1, 1.4).to(dtype)


def test_fim_weights_of_the_grid_field_match_per_ray_gradients_of_its_mlps():
    field = tiny_field()
    params = init_radiance_params(field, 1, torch.Generator().manual_seed(0))
    params = {k: v.requires_grad_() for k, v in params.items()}
    x, y = (
        random_rays(12, 1)[None],
        torch.rand(1, 12, 3, generator=torch.Generator().manual_seed(2)),
    )
    cache: list = []
    losses = per_sample_loss(forward(field, params, x, cache), y)  # (1, 12)
    pre_grads = torch.autograd.grad(losses.sum(), [z for _, z in cache], retain_graph=True)
    ours = fisher_trace(cache, list(pre_grads), field.samples_per_item)[0]
    mlp_keys = [k for k in params if k != "hash_tables"]
    assert len(cache) == len(mlp_keys) // 2  # every MLP layer (weights and bias), no table
    brute = []
    for ray in range(12):
        grads = torch.autograd.grad(
            losses[0, ray], [params[k] for k in mlp_keys], retain_graph=True
        )
        brute.append(sum(g.square().sum() for g in grads))
    brute = torch.stack(brute)
    assert torch.allclose(ours, brute, rtol=1e-4, atol=1e-10), (ours, brute)
    assert brute.std() > 0.1 * brute.mean()  # rays really differ


def test_second_order_meta_gradient_through_the_hash_encoding_matches_finite_differences():
    torch.set_default_dtype(torch.float64)
    try:
        field = tiny_field(samples=3)
        meta = MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.5)
        theta0 = init_radiance_params(field, 1, torch.Generator().manual_seed(3))
        theta0 = {k: v.double() for k, v in theta0.items()}
        coords = random_rays(8, 4, torch.float64).reshape(2, 4, 8)  # 2 blocks of 4 rays
        values = torch.rand(1, 2, 4, 3, generator=torch.Generator().manual_seed(5)).double()
        episode = signal_episode("modular", meta, theta0, coords, values)
        grads, _ = meta_gradient(field, meta, None, theta0, episode)

        def outer(params: dict) -> torch.Tensor:
            adapted = adapt_episode(field, meta, None, params, episode, first_order=False)
            x, y = episode.query
            return per_sample_loss(evaluate(field, adapted, x), y).mean()

        generator = torch.Generator().manual_seed(6)
        direction = {k: torch.randn(v.shape, generator=generator) for k, v in theta0.items()}
        eps = 1e-6
        with torch.enable_grad():
            numeric = (
                outer({k: v + eps * direction[k] for k, v in theta0.items()})
                - outer({k: v - eps * direction[k] for k, v in theta0.items()})
            ) / (2 * eps)
        analytic = sum((grads[k] * direction[k]).sum() for k in grads)
        assert abs(float(analytic - numeric)) < 1e-6 * max(1.0, abs(float(numeric)))
        assert float(grads["hash_tables"].abs().sum()) > 0  # the tables are meta-learned too
        first, _ = meta_gradient(field, dataclasses.replace(meta, algorithm="fomaml"), None,
                                 theta0, episode)  # fmt: skip
        assert not torch.allclose(first["hash_tables"], grads["hash_tables"])
    finally:
        torch.set_default_dtype(torch.float32)
