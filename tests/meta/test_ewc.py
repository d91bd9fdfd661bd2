"""EWC with the Gauss-Newton Fisher: exact against per-sample Jacobians, large on a fitted
segment (where the old squared-loss-gradient estimate was ~1e-12), and it measurably reduces
forgetting on a two-segment signal learned in order."""

import math

import pytest
import torch
from torch.func import jacrev

from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig, Params, evaluate, forward, init_params
from mclnf_dist.meta.adaptation import OptimiserPlan, adapt
from mclnf_dist.meta.ewc import EwcPenalty, fisher_diagonal
from mclnf_dist.meta.inner_loop import loss_and_grads
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params, pack_rays

STEPS = 200
ADAM = OptimiserPlan(sgd_steps=0, sgd_lr=0.0, adam_lr=1e-3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors here are tiny: a second thread only spins (200 steps: 9 s of CPU instead of 0.4)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_force_fisher(field, params: Params, x: torch.Tensor) -> Params:
    """mean_i mean_c (d f_c(x_i) / d theta)^2 from one full Jacobian per sample and module."""
    modules, rows = x.shape[:2]
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    channels = 1
    for m in range(modules):
        module = {k: v[m : m + 1] for k, v in params.items()}
        for i in range(rows):
            jacobian = jacrev(lambda p, m=m, i=i: forward(field, p, x[m : m + 1, i : i + 1])[0, 0])(
                module
            )
            for key, j in jacobian.items():
                channels = j.shape[0]
                total[key][m] += j.square().sum(0)[0]
    return {k: v / (rows * channels) for k, v in total.items()}


def relative_error(a: Params, b: Params) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


@pytest.mark.parametrize("kind", ["siren", "relu_pe"])
def test_fisher_equals_per_sample_jacobians_of_a_coordinate_field(kind):
    """Catches squaring the summed gradient instead of summing squares, or a wrong mean."""
    generator = torch.Generator().manual_seed(0)
    field = FieldConfig(kind=kind, depth=3, width=8, pe_frequencies=2)
    params = {k: v.double() for k, v in init_params(field, 2, 3, 2, generator).items()}
    x = torch.rand(2, 5, 2, generator=generator, dtype=torch.float64) * 2 - 1
    fisher = fisher_diagonal(field, params, x, rows=100)
    assert relative_error(fisher, brute_force_fisher(field, params, x)) < 1e-12


@pytest.mark.parametrize("importance", [0, 3])
def test_fisher_equals_per_sample_jacobians_of_a_radiance_field(importance):
    """A ray's gradient sums its K points before squaring (not a sum of per-point squares)."""
    generator = torch.Generator().manual_seed(1)
    mlp = FieldConfig(kind="relu_pe", depth=3, width=8, pe_frequencies=2, output_offset=0.0)
    field = RadianceFieldConfig(
        mlp=mlp, num_samples=4, num_importance_samples=importance, perturb=False
    )
    params = {k: v.double() for k, v in init_radiance_params(field, 2, generator).items()}
    origins = torch.rand(2, 3, 3, generator=generator, dtype=torch.float64) - 0.5
    directions = torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)
    x = pack_rays(origins, torch.nn.functional.normalize(directions, dim=-1), 0.1, 1.5)
    fisher = fisher_diagonal(field, params, x, rows=100)
    assert relative_error(fisher, brute_force_fisher(field, params, x)) < 1e-12


def test_fisher_subsamples_rows_and_rejects_zero_rows():
    generator = torch.Generator().manual_seed(2)
    field = FieldConfig(depth=2, width=4)
    params = init_params(field, 1, 1, 1, generator)
    x = torch.linspace(-1, 1, 64).reshape(1, 64, 1)
    subsampled = fisher_diagonal(field, params, x, rows=8, seed=3)
    picked = x[:, torch.randperm(64, generator=torch.Generator().manual_seed(3))[:8]]
    assert relative_error(subsampled, fisher_diagonal(field, params, picked, rows=8)) < 1e-6
    with pytest.raises(MclnfError, match="ewc rows must be >= 1, got 0"):
        fisher_diagonal(field, params, x, rows=0)


def psnr(field: FieldConfig, params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    return -10 * math.log10(float((evaluate(field, params, x) - y).square().mean()))


@pytest.fixture(scope="module")
def two_halves():
    """A 1-D signal cut in two halves; a small SIREN fitted to the first half with Adam."""
    field = FieldConfig(kind="siren", depth=3, width=32)
    t = torch.linspace(-1, 1, 256)
    signal = 0.5 + 0.3 * torch.sin(7 * t) + 0.15 * torch.cos(23 * t + 1)
    first = (t[:128].reshape(1, 128, 1), signal[:128].reshape(1, 128, 1))
    second = (t[128:].reshape(1, 128, 1), signal[128:].reshape(1, 128, 1))
    init = init_params(field, 1, 1, 1, torch.Generator().manual_seed(0))
    fitted = adapt(field, init, *first, STEPS, ADAM)
    return field, first, second, fitted


def test_fisher_stays_large_on_a_fitted_segment(two_halves):
    """The old estimate (squared mini-batch loss gradients) vanishes with the residuals."""
    field, first, _, fitted = two_halves
    assert psnr(field, fitted, *first) > 60  # fitted: the residuals are ~1e-3
    _, grads = loss_and_grads(field, fitted, *first)
    old = torch.cat([g.square().flatten() for g in grads.values()]).mean()
    new = fisher_diagonal(field, fitted, first[0], rows=4096)
    mean_new = torch.cat([f.flatten() for f in new.values()]).mean()
    assert old < 1e-9
    assert mean_new > 0.05
    assert mean_new / old > 1e8
    # the output bias moves every prediction one-for-one: its Fisher is exactly 1
    assert float(new["b2"].squeeze()) == pytest.approx(1.0, abs=1e-6)


def test_ewc_forgets_less_than_finetuning_and_still_learns(two_halves):
    """Same init, steps and optimiser: EWC keeps >= 3 dB more of segment 1 than fine-tuning."""
    field, first, second, fitted = two_halves
    before = psnr(field, fitted, *first)
    finetuned = adapt(field, fitted, *second, STEPS, ADAM)
    ewc = EwcPenalty(strength=1.0)
    ewc.consolidate(field, fitted, *first, rows=4096)
    consolidated = adapt(field, fitted, *second, STEPS, ADAM, ewc=ewc)
    finetune_drop = before - psnr(field, finetuned, *first)
    ewc_drop = before - psnr(field, consolidated, *first)
    assert finetune_drop > 30  # plain fine-tuning forgets segment 1 (65 -> 21 dB measured)
    assert ewc_drop < finetune_drop - 3, (ewc_drop, finetune_drop)  # measured: 8.6 dB less
    assert psnr(field, consolidated, *second) > 40  # and learns segment 2 (measured 52 dB)


def test_online_ewc_sums_fishers_and_anchors_at_the_latest_params():
    generator = torch.Generator().manual_seed(4)
    field = FieldConfig(depth=2, width=4)
    first, second = (init_params(field, 1, 1, 1, generator) for _ in range(2))
    x = torch.rand(1, 16, 1, generator=generator) * 2 - 1
    y = torch.zeros(1, 16, 1)
    ewc = EwcPenalty(strength=3.0)
    zero = {k: torch.zeros_like(v) for k, v in first.items()}
    assert ewc.add_gradient(first, zero) is zero  # nothing consolidated yet: no penalty
    ewc.consolidate(field, first, x, y, rows=16)
    ewc.consolidate(field, second, x, y, rows=16)
    fisher = {
        k: fisher_diagonal(field, first, x, 16)[k] + fisher_diagonal(field, second, x, 16)[k]
        for k in first
    }
    moved = {k: v + 0.5 for k, v in second.items()}
    grads = ewc.add_gradient(moved, zero)
    for key in first:
        torch.testing.assert_close(grads[key], 3.0 * fisher[key] * 0.5)
    with pytest.raises(MclnfError, match="ewc targets"):
        ewc.consolidate(field, first, x, y[:, :3], rows=16)
