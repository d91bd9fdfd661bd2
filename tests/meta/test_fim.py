import pytest
import torch
from torch.func import grad, vmap

from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.protocol import MethodContext
from mclnf_dist.fields.stacked_mlp import FieldConfig, evaluate, forward, init_params
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig, fim_weights, fisher_trace
from mclnf_dist.meta.inner_loop import (
    fim_loss_and_grads,
    loss_and_grads,
    per_sample_loss,
    weighted_query_loss,
)
from mclnf_dist.meta.meta_learning import MetaConfig, adapt_episode, meta_gradient, signal_episode
from mclnf_dist.meta.methods import get_method


def vmap_fisher(cfg, params, x, y):
    """Reference: ||grad_theta l_j||^2 from per-sample gradients (torch.func.vmap(grad))."""

    def sample_loss(p, xj, yj):
        return per_sample_loss(forward(cfg, p, xj[None, None]), yj[None, None])[0, 0]

    single = {k: v[0] for k, v in params.items()}

    def sample_loss_unbatched(p, xj, yj):
        return sample_loss({k: v[None] for k, v in p.items()}, xj, yj)

    per_sample = vmap(grad(sample_loss_unbatched), in_dims=(None, 0, 0))(single, x[0], y[0])
    return sum(g.flatten(1).square().sum(1) for g in per_sample.values())[None]


def closed_form_fisher(cfg, params, x, y):
    cache = []
    losses = per_sample_loss(forward(cfg, params, x, cache), y)
    pre_grads = torch.autograd.grad(losses.sum(), [z for _, z in cache])
    return fisher_trace(cache, pre_grads)


def test_fisher_trace_and_weights_match_vmap_per_sample_gradients():
    torch.manual_seed(0)
    for kind in ("siren", "relu_pe"):
        cfg = FieldConfig(kind=kind, depth=4, width=32)
        params = init_params(cfg, 2, 3, 1, generator=torch.Generator().manual_seed(3))
        params = {k: v.requires_grad_() for k, v in params.items()}
        x, y = torch.rand(1, 64, 2) * 2 - 1, torch.rand(1, 64, 3)
        ours = closed_form_fisher(cfg, params, x, y)
        reference = vmap_fisher(cfg, params, x, y)
        rel = ((ours - reference).abs() / reference.abs().clamp_min(1e-12)).max()
        assert rel < 1e-4, f"{kind}: rel. error {rel}"
        fim = FimConfig(fim_lambda=0.7, beta=0.1, w_max=5.0)
        w_ours, w_ref = fim_weights(ours, fim), fim_weights(reference, fim)
        assert ((w_ours - w_ref).abs() / w_ref).max() < 1e-4
        assert w_ours.std() > 0.05  # informative samples really get different weights


def test_weights_mean_one_clipped_and_mixed():
    fisher = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    weights = fim_weights(fisher, FimConfig(fim_lambda=1.0, w_max=10.0))
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    assert weights.argmax() == 3
    clipped = fim_weights(fisher, FimConfig(fim_lambda=1.0, w_max=1.5))
    assert clipped.max() <= 1.5
    mixed = fim_weights(fisher, FimConfig(fim_lambda=1.0, beta=1.0))
    torch.testing.assert_close(mixed, torch.ones_like(mixed))


def test_lambda_zero_is_exactly_mse():
    cfg = FieldConfig(depth=3, width=16)
    params = init_params(cfg, 2, 3, 2, generator=torch.Generator().manual_seed(0))
    params = {k: v.requires_grad_() for k, v in params.items()}
    x, y = torch.rand(2, 30, 2), torch.rand(2, 30, 3)
    fim_loss, fim_grads = fim_loss_and_grads(cfg, params, x, y, FimConfig(fim_lambda=0.0), False)
    mse = per_sample_loss(forward(cfg, params, x), y).mean(-1)
    assert torch.equal(fim_loss, mse)  # bit-for-bit: every weight is exactly 1
    torch.testing.assert_close(mse, ((forward(cfg, params, x) - y) ** 2).mean((1, 2)))
    mse_grads = torch.autograd.grad(mse.sum(), list(params.values()))
    for key, g in zip(params, mse_grads, strict=True):
        torch.testing.assert_close(fim_grads[key], g, rtol=1e-5, atol=1e-7)
    # and the public entry point takes the plain MSE path for lambda=0
    loss, _ = loss_and_grads(cfg, params, x, y, FimConfig(fim_lambda=0.0))
    assert torch.equal(loss, mse)


def test_fim_gradient_equals_autograd_of_weighted_loss():
    cfg = FieldConfig(depth=3, width=16)
    params = init_params(cfg, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    params = {k: v.requires_grad_() for k, v in params.items()}
    x, y = torch.rand(3, 25, 2), torch.rand(3, 25, 3)
    fim = FimConfig(fim_lambda=1.0)
    loss, grads = fim_loss_and_grads(cfg, params, x, y, fim, False)
    weights = fim_weights(closed_form_fisher(cfg, params, x, y), fim)
    weighted = (weights * per_sample_loss(forward(cfg, params, x), y)).mean(-1)
    torch.testing.assert_close(loss, weighted.detach())
    reference = torch.autograd.grad(weighted.sum(), list(params.values()))
    for key, g in zip(params, reference, strict=True):
        torch.testing.assert_close(grads[key], g, rtol=1e-4, atol=1e-6)


class ThreePointField(FieldConfig):
    """A field whose loss samples each see S=3 MLP rows (like a NeRF ray's points)."""

    samples_per_item = 3

    def mlp_inputs(self, x, params=None):
        offsets = torch.tensor([0.0, 0.1, 0.2])[:, None]
        points = x[..., None, :] + offsets  # (M, n, 3, d)
        return points.reshape(x.shape[0], -1, x.shape[-1]), None

    def outputs(self, raw, aux):
        return raw.reshape(raw.shape[0], -1, 3, raw.shape[-1]).sum(2)


def test_fisher_of_multi_point_samples_matches_vmap():
    cfg = ThreePointField(depth=3, width=16)
    params = init_params(cfg, 2, 3, 1, generator=torch.Generator().manual_seed(5))
    params = {k: v.requires_grad_() for k, v in params.items()}
    x, y = torch.rand(1, 20, 2), torch.rand(1, 20, 3)
    cache = []
    losses = per_sample_loss(forward(cfg, params, x, cache), y)
    pre_grads = torch.autograd.grad(losses.sum(), [z for _, z in cache])
    ours = fisher_trace(cache, pre_grads, samples_per_item=3)
    reference = vmap_fisher(cfg, params, x, y)
    assert ((ours - reference).abs() / reference).max() < 1e-4


def test_gradients_of_selected_keys_only():
    cfg = FieldConfig(depth=3, width=8)
    params = init_params(cfg, 2, 1, 2, generator=torch.Generator().manual_seed(0))
    x, y = torch.rand(2, 10, 2), torch.rand(2, 10, 1)
    for fim in (None, FimConfig(fim_lambda=1.0)):
        _, grads = loss_and_grads(cfg, params, x, y, fim, keys={"w2", "b2"})
        assert set(grads) == {"w2", "b2"}
        _, full = loss_and_grads(cfg, params, x, y, fim)
        torch.testing.assert_close(grads["w2"], full["w2"])


# ----------------------------------------------------------- where the weights enter (apply_to)


def tiny_episode(cfg=None):
    """A 3x8 SIREN, theta_0, and a modular episode of 2 signals x 2 segments of 6 coordinates."""
    cfg = cfg or FieldConfig(depth=3, width=8, w0=3.0)
    theta0 = init_params(cfg, 1, 2, 1, generator=torch.Generator().manual_seed(0))
    coords = torch.linspace(-1, 1, 12).reshape(2, 6, 1)
    values = torch.rand(2, 2, 6, 2, generator=torch.Generator().manual_seed(1))
    meta = MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.1)
    return cfg, meta, theta0, signal_episode("modular", meta, theta0, coords, values)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_outer_placement_with_lambda_zero_is_exactly_the_mse_meta_gradient(algorithm):
    cfg, meta, theta0, episode = tiny_episode()
    meta.algorithm = algorithm
    mse_grads, mse_metrics = meta_gradient(cfg, meta, None, theta0, episode)
    for apply_to in ("outer", "both"):
        fim = FimConfig(fim_lambda=0.0, apply_to=apply_to)
        grads, metrics = meta_gradient(cfg, meta, fim, theta0, episode)
        assert metrics == mse_metrics
        for key in grads:
            assert torch.equal(grads[key], mse_grads[key]), key


def hand_weighted_outer_loss(cfg, meta, theta0, episode, lam, inner_fim=None):
    """The outer loss written out: Fisher traces of every query sample from per-sample gradients
    (vmap) at the adapted parameters, ``w_j = n F_j^lam / sum_k F_k^lam`` per module, detached."""
    init = {k: v.detach().requires_grad_() for k, v in theta0.items()}
    adapted = adapt_episode(cfg, meta, inner_fim, init, episode, first_order=False)
    x, y = episode.query
    losses = per_sample_loss(evaluate(cfg, adapted, x), y)  # (M, n)
    rows = []
    for m in range(x.shape[0]):
        module = {k: v[m : m + 1].detach() for k, v in adapted.items()}
        fisher = vmap_fisher(cfg, module, x[m : m + 1], y[m : m + 1])[0]  # (n,)
        rows.append(x.shape[1] * fisher**lam / (fisher**lam).sum())
    weights = torch.stack(rows)
    return (weights * losses).mean(), init, weights


def test_outer_placement_loss_and_gradient_equal_the_hand_computed_weighted_mean():
    cfg, meta, theta0, episode = tiny_episode()
    fim = FimConfig(fim_lambda=1.0, apply_to="outer")
    grads, metrics = meta_gradient(cfg, meta, fim, theta0, episode)
    expected, init, weights = hand_weighted_outer_loss(cfg, meta, theta0, episode, 1.0)
    assert metrics["outer_loss"] == pytest.approx(expected.item(), rel=1e-5)
    reference = torch.autograd.grad(expected, list(init.values()))
    for key, g in zip(init, reference, strict=True):
        torch.testing.assert_close(grads[key], g, rtol=1e-4, atol=1e-7)
    # the weights really differ from uniform here, so the check above is not the MSE's
    assert weights.max() / weights.min() > 2.0
    _, mse_metrics = meta_gradient(cfg, meta, None, theta0, episode)
    assert abs(metrics["outer_loss"] - mse_metrics["outer_loss"]) > 1e-3 * mse_metrics["outer_loss"]


def test_inner_placement_leaves_the_outer_loss_unweighted_and_both_weights_both():
    cfg, meta, theta0, episode = tiny_episode()
    inner = FimConfig(fim_lambda=1.0, apply_to="inner")
    # the behaviour before apply_to existed: FIM inner loop, plain MSE on the query
    init = {k: v.detach().requires_grad_() for k, v in theta0.items()}
    adapted = adapt_episode(cfg, meta, inner, init, episode, first_order=False)
    x, y = episode.query
    mse = per_sample_loss(evaluate(cfg, adapted, x), y).mean()
    grads, metrics = meta_gradient(cfg, meta, inner, theta0, episode)
    assert metrics["outer_loss"] == pytest.approx(mse.item(), rel=1e-6)
    for key, g in zip(init, torch.autograd.grad(mse, list(init.values())), strict=True):
        torch.testing.assert_close(grads[key], g)
    both = FimConfig(fim_lambda=1.0, apply_to="both")
    _, both_metrics = meta_gradient(cfg, meta, both, theta0, episode)
    expected, _, _ = hand_weighted_outer_loss(cfg, meta, theta0, episode, 1.0, inner_fim=inner)
    assert both_metrics["outer_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert both_metrics["outer_loss"] != pytest.approx(metrics["outer_loss"], rel=1e-3)


def test_weighted_query_loss_of_multi_point_samples_uses_the_ray_fisher():
    cfg = ThreePointField(depth=3, width=16)
    params = init_params(cfg, 2, 3, 2, generator=torch.Generator().manual_seed(5))
    x = torch.rand(2, 10, 2, generator=torch.Generator().manual_seed(6))
    y = torch.rand(2, 10, 3, generator=torch.Generator().manual_seed(7))
    fim = FimConfig(fim_lambda=0.5, apply_to="outer")
    ours = weighted_query_loss(cfg, {k: v.requires_grad_() for k, v in params.items()}, x, y, fim)
    expected = []
    for m in range(2):
        module = {k: v[m : m + 1].detach() for k, v in params.items()}
        fisher = vmap_fisher(cfg, module, x[m : m + 1], y[m : m + 1])[0].sqrt()  # lambda 0.5
        losses = per_sample_loss(forward(cfg, module, x[m : m + 1]), y[m : m + 1])[0]
        expected.append((10 * fisher / fisher.sum() * losses).mean())
    torch.testing.assert_close(ours.detach(), torch.stack(expected), rtol=1e-4, atol=1e-8)


def test_reptile_refuses_outer_weights_in_one_line():
    cfg, meta, theta0, episode = tiny_episode()
    meta.algorithm = "reptile"
    meta_gradient(cfg, meta, FimConfig(fim_lambda=1.0, apply_to="inner"), theta0, episode)
    for apply_to in ("outer", "both"):
        with pytest.raises(MclnfError, match="fim.apply_to='(outer|both)' needs an outer loss"):
            meta_gradient(cfg, meta, FimConfig(fim_lambda=1.0, apply_to=apply_to), theta0, episode)


def test_test_time_loss_is_fim_only_for_inner_and_both():
    cfg, meta, theta0, _ = tiny_episode()
    for name, apply_to, expect_fim in [
        ("mim", "inner", True),
        ("mim", "both", True),
        ("mim", "outer", False),
        ("mod", "inner", False),
        ("mod", "both", False),
    ]:
        fim = FimConfig(fim_lambda=0.5, apply_to=apply_to)
        ctx = MethodContext(get_method(name), cfg, theta0, meta, fim, AdaptConfig(max_steps=2))
        assert (ctx.loss() is fim) == expect_fim, (name, apply_to)
        assert ctx.loss() is None or ctx.loss() is fim
