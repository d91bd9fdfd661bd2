"""Volume rendering matches analytic transmittance; samplers put samples where they should."""

import math

import torch

from mclnf_dist.nerf.compositing import volume_render
from mclnf_dist.nerf.sampling import hierarchical_samples, sample_pdf, stratified_samples


def test_constant_slab_opacity_is_analytic():
    sigma, length, samples = 1.7, 0.8, 2048
    t = stratified_samples(0.0, length, samples, num_rays=3)
    densities = torch.full_like(t, sigma)
    colors = torch.tensor([0.2, 0.4, 0.6]).expand(3, samples, 3)
    out = volume_render(densities, colors, t, background=torch.ones(3), far=length)
    expected = 1 - math.exp(-sigma * length)
    torch.testing.assert_close(out["opacity"], torch.full((3,), expected), atol=1e-4, rtol=0)
    mixed = torch.tensor([0.2, 0.4, 0.6]) * expected + (1 - expected)
    torch.testing.assert_close(out["rgb"][0], mixed, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["weights"].sum(-1), out["opacity"])
    # Mean depth of the first scattering inside the slab, times the opacity.
    depth = (1 - math.exp(-sigma * length) * (1 + sigma * length)) / sigma
    torch.testing.assert_close(out["depth"], torch.full((3,), depth), atol=1e-3, rtol=0)


def test_slab_inside_range_with_perturbed_samples():
    generator = torch.Generator().manual_seed(0)
    t = stratified_samples(torch.zeros(4), torch.full((4,), 3.0), 4096, perturb=True,
                           generator=generator)  # fmt: skip
    densities = ((t > 1.0) & (t < 1.5)).float() * 2.0  # slab of thickness 0.5
    out = volume_render(densities, torch.zeros(*t.shape, 3), t, far=3.0)
    torch.testing.assert_close(
        out["opacity"], torch.full((4,), 1 - math.exp(-1.0)), atol=3e-3, rtol=0
    )


def test_last_sample_extends_to_infinity_without_far():
    t = torch.linspace(0, 1, 8).expand(2, 8)
    densities = torch.zeros(2, 8)
    densities[:, -1] = 0.5
    out = volume_render(densities, torch.ones(2, 8, 3), t)
    torch.testing.assert_close(out["opacity"], torch.ones(2))


def test_stratified_samples_deterministic_and_within_bins():
    fixed = stratified_samples(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0]), 4)
    torch.testing.assert_close(fixed, torch.tensor([[1.0, 1.5, 2.0, 2.5], [2.0, 3.0, 4.0, 5.0]]))
    a = stratified_samples(1.0, 3.0, 4, num_rays=5, perturb=True,
                           generator=torch.Generator().manual_seed(1))  # fmt: skip
    b = stratified_samples(1.0, 3.0, 4, num_rays=5, perturb=True,
                           generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(a, b)
    lower = torch.tensor([1.0, 1.5, 2.0, 2.5])
    assert ((a >= lower) & (a < lower + 0.5)).all()


def test_hierarchical_samples_concentrate_where_weights_are():
    t = stratified_samples(0.0, 10.0, 10, num_rays=2)  # bins [i, i+1)
    weights = torch.zeros(2, 10)
    weights[0, 3] = 1.0  # all mass in [3, 4)
    weights[1, 7] = weights[1, 8] = 0.5  # mass in [7, 9)
    fine = hierarchical_samples(t, weights, far=10.0, num_samples=64, include_coarse=False)
    assert fine.shape == (2, 64)
    assert ((fine[0] >= 3) & (fine[0] <= 4)).float().mean() > 0.95
    assert ((fine[1] >= 7) & (fine[1] <= 9)).float().mean() > 0.95
    assert (fine[:, 1:] >= fine[:, :-1]).all()
    merged = hierarchical_samples(t, weights, far=10.0, num_samples=16, perturb=True,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert merged.shape == (2, 26) and (merged[:, 1:] >= merged[:, :-1]).all()


def test_sample_pdf_without_mass_spreads_over_range():
    edges = torch.linspace(2.0, 6.0, 9).expand(3, 9)
    samples = sample_pdf(edges, torch.zeros(3, 8), 32)
    assert samples.min() >= 2.0 and samples.max() <= 6.0
    assert (samples[:, 0] < 2.2).all() and (samples[:, -1] > 5.8).all()
