import math

import pytest
import torch

from mclnf_dist.fields.stacked_mlp import FieldConfig, evaluate, init_params
from mclnf_dist.meta.inner_loop import per_sample_loss
from mclnf_dist.meta.meta_learning import (
    MetaConfig,
    adapt_episode,
    block_episode,
    head_keys,
    meta_gradient,
    signal_episode,
)


def outer_loss(schedule, cfg, meta, fim, theta0, coords, values):
    episode = signal_episode(schedule, meta, theta0, coords, values)
    adapted = adapt_episode(cfg, meta, fim, theta0, episode, first_order=False)
    x, y = episode.query
    return per_sample_loss(evaluate(cfg, adapted, x), y).mean()


# FIM weights are detached by design (DESIGN section 1), so finite differences of a FIM inner loop
# would also see the weights move; the check is exact for the MSE inner loop of every schedule.
@pytest.mark.parametrize("schedule", ["modular", "shared", "sequential"])
def test_second_order_meta_gradient_matches_finite_differences(schedule):
    fim = None
    torch.set_default_dtype(torch.float64)
    try:
        cfg = FieldConfig(depth=3, width=8, w0=3.0)
        meta = MetaConfig(algorithm="maml", inner_steps=3, inner_lr=0.1, head_layers=2)
        theta0 = init_params(cfg, 1, 2, 1, generator=torch.Generator().manual_seed(0))
        theta0 = {k: v.double() for k, v in theta0.items()}
        coords = torch.linspace(-1, 1, 12).reshape(3, 4, 1)  # 3 segments of 4 coords
        values = torch.rand(2, 3, 4, 2, generator=torch.Generator().manual_seed(1)).double()
        episode = signal_episode(schedule, meta, theta0, coords, values)
        grads, _ = meta_gradient(cfg, meta, fim, theta0, episode)
        generator = torch.Generator().manual_seed(2)  # not the global RNG: other tests move it
        direction = {
            k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in theta0.items()
        }
        eps = 1e-6
        plus = {k: v + eps * direction[k] for k, v in theta0.items()}
        minus = {k: v - eps * direction[k] for k, v in theta0.items()}
        with torch.enable_grad():
            numeric = (
                outer_loss(schedule, cfg, meta, fim, plus, coords, values)
                - outer_loss(schedule, cfg, meta, fim, minus, coords, values)
            ) / (2 * eps)
        analytic = sum((grads[k] * direction[k]).sum() for k in grads)
        assert abs(float(analytic - numeric)) < 1e-6 * max(1.0, abs(float(numeric)))
        fomaml = MetaConfig(algorithm="fomaml", inner_steps=3, inner_lr=0.1)
        first, _ = meta_gradient(cfg, fomaml, fim, theta0, episode)
        assert any(not torch.allclose(first[k], grads[k]) for k in grads)  # 2nd-order terms matter
    finally:
        torch.set_default_dtype(torch.float32)


def test_reptile_direction_is_the_mean_of_init_minus_each_tasks_own_sgd_result():
    """Reptile's "gradient" is ``mean_tasks(theta_0 - theta_K)`` with ``theta_K`` from K plain-SGD
    steps on the task alone: checked against a loop over tasks written out by hand, which a sign
    flip, a sum instead of a mean, a wrong step count or rate, or tasks sharing one copy of
    ``theta_0`` would all break. ``outer_psnr`` is the adapted tasks' PSNR on the query."""
    cfg = FieldConfig(depth=3, width=8, w0=3.0)
    theta0 = init_params(cfg, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    coords = torch.linspace(-1, 1, 8).reshape(2, 4, 1)
    values = torch.rand(3, 2, 4, 1, generator=torch.Generator().manual_seed(1))
    meta = MetaConfig(algorithm="reptile", inner_steps=2, inner_lr=0.05)
    episode = signal_episode("modular", meta, theta0, coords, values)
    grads, metrics = meta_gradient(cfg, meta, None, theta0, episode)

    expected = {k: torch.zeros_like(v) for k, v in theta0.items()}
    query_error = 0.0
    for signal in range(3):
        for segment in range(2):
            x, y = coords[segment : segment + 1], values[signal, segment : segment + 1]
            task = {k: v.clone() for k, v in theta0.items()}
            for _ in range(2):
                task = {k: v.requires_grad_() for k, v in task.items()}
                loss = (evaluate(cfg, task, x) - y).square().mean()
                steps = torch.autograd.grad(loss, list(task.values()))
                task = {
                    k: (v - 0.05 * g).detach()
                    for (k, v), g in zip(task.items(), steps, strict=True)
                }
            for key in theta0:
                expected[key] += (theta0[key] - task[key]) / 6
            query_error += float((evaluate(cfg, task, x) - y).square().mean()) / 6
    for key in theta0:
        torch.testing.assert_close(grads[key], expected[key])
    assert metrics["outer_psnr"] == pytest.approx(-10 * math.log10(query_error), abs=1e-4)
    assert metrics["outer_loss"] == pytest.approx(query_error, rel=1e-5)


def test_first_order_fim_meta_gradient_is_the_gradient_at_the_adapted_params():
    """FOMAML with the FIM loss: inner steps are constants, the meta-gradient is the outer
    gradient at the adapted parameters summed over tasks (this once crashed: the FIM's weighted
    gradient kept the graph of the layer inputs, which the inner backward pass had freed)."""
    from mclnf_dist.meta.fim import FimConfig

    cfg = FieldConfig(depth=3, width=8, w0=3.0)
    fim = FimConfig(fim_lambda=0.5)
    meta = MetaConfig(algorithm="fomaml", inner_steps=2, inner_lr=0.1)
    theta0 = init_params(cfg, 1, 2, 1, generator=torch.Generator().manual_seed(0))
    coords = torch.linspace(-1, 1, 12).reshape(3, 4, 1)
    values = torch.rand(2, 3, 4, 2, generator=torch.Generator().manual_seed(1))
    episode = signal_episode("modular", meta, theta0, coords, values)
    grads, _ = meta_gradient(cfg, meta, fim, theta0, episode)
    adapted = adapt_episode(cfg, meta, fim, theta0, episode, first_order=True)
    adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    x, y = episode.query
    loss = per_sample_loss(evaluate(cfg, adapted, x), y).mean()
    expected = torch.autograd.grad(loss, list(adapted.values()))
    for key, grad in zip(adapted, expected, strict=True):
        torch.testing.assert_close(grads[key], grad.sum(0, keepdim=True))


def test_a_city_oml_episode_is_the_oml_objective_of_one_signal_whose_segments_are_blocks():
    """``block_episode('sequential')`` (the city's oml meta-training) streams the blocks through
    one network's head and scores all of them: the same meta-gradient as the signals' OML episode
    of one signal with those blocks as segments (context rays == query rays here)."""
    cfg = FieldConfig(depth=3, width=8, w0=3.0)
    meta = MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.1, head_layers=2)
    generator = torch.Generator().manual_seed(0)
    theta0 = init_params(cfg, 2, 3, 1, generator=generator)
    coords = torch.rand(3, 5, 2, generator=generator) * 2 - 1  # 3 blocks of 5 rays
    values = torch.rand(1, 3, 5, 3, generator=generator)
    x, y = torch.cat([coords, coords], 1), torch.cat([values[0], values[0]], 1)  # (3, 10, .)

    episode = block_episode("sequential", meta, theta0, x, y, 5)
    assert len(episode.context) == 3 and episode.query[0].shape == (1, 15, 2)
    assert episode.adapt_keys == head_keys(theta0, 2) != set(theta0)
    grads, _ = meta_gradient(cfg, meta, None, theta0, episode)
    expected, _ = meta_gradient(
        cfg, meta, None, theta0, signal_episode("sequential", meta, theta0, coords, values)
    )
    for key in theta0:
        torch.testing.assert_close(grads[key], expected[key])
    assert float(grads["w0"].abs().sum()) > 0  # the representation learns through the head

    modular = block_episode("modular", meta, theta0, x, y, 5)
    assert len(modular.context) == 1 and modular.query[0].shape == (3, 5, 2)
    with pytest.raises(ValueError, match="unknown block schedule 'shared'"):
        block_episode("shared", meta, theta0, x, y, 5)
