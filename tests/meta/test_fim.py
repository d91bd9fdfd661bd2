import torch
from torch.func import grad, vmap

from mclnf_dist.fields.stacked_mlp import FieldConfig, forward, init_params
from mclnf_dist.meta.fim import FimConfig, fim_weights, fisher_trace
from mclnf_dist.meta.inner_loop import fim_loss_and_grads, loss_and_grads, per_sample_loss


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
