import pytest
import torch

from mclnf_dist.fields.stacked_mlp import FieldConfig, evaluate, init_params
from mclnf_dist.meta.inner_loop import per_sample_loss
from mclnf_dist.meta.meta_learning import MetaConfig, adapt_tasks, meta_gradient


def outer_loss(schedule, cfg, meta, fim, theta0, coords, values):
    adapted, x, y = adapt_tasks(schedule, cfg, meta, fim, theta0, coords, values, False)
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
        grads, _ = meta_gradient(schedule, cfg, meta, fim, theta0, coords, values)
        direction = {k: torch.randn_like(v) for k, v in theta0.items()}
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
        first, _ = meta_gradient(
            schedule, cfg, MetaConfig(algorithm="fomaml", inner_steps=3, inner_lr=0.1),
            fim, theta0, coords, values,
        )  # fmt: skip
        assert any(not torch.allclose(first[k], grads[k]) for k in grads)  # 2nd-order terms matter
    finally:
        torch.set_default_dtype(torch.float32)


def test_reptile_direction_points_from_adapted_to_init():
    cfg = FieldConfig(depth=3, width=8)
    theta0 = init_params(cfg, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    coords = torch.linspace(-1, 1, 8).reshape(2, 4, 1)
    values = torch.rand(3, 2, 4, 1)
    meta = MetaConfig(algorithm="reptile", inner_steps=2, inner_lr=0.05)
    grads, metrics = meta_gradient("modular", cfg, meta, None, theta0, coords, values)
    assert all(g.shape == theta0[k].shape for k, g in grads.items())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert metrics["outer_psnr"] > 0
