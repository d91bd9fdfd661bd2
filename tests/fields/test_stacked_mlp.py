import pytest
import torch

from mclnf_dist.fields.stacked_mlp import (
    FieldConfig,
    count_parameters,
    evaluate,
    expand_params,
    forward,
    init_params,
    map_module_chunks,
)


def single_module_forward(cfg, params, m, x):
    """Reference: module ``m`` alone, with ordinary 2-D matmuls."""
    one = {k: v[m : m + 1] for k, v in params.items()}
    return forward(cfg, one, x[None])[0]


@pytest.mark.parametrize("kind", ["siren", "relu_pe"])
def test_stacked_forward_equals_per_module_loop(kind):
    cfg = FieldConfig(kind=kind, depth=4, width=32)
    params = init_params(cfg, 2, 3, num_modules=5, generator=torch.Generator().manual_seed(0))
    x = torch.rand(5, 50, 2) * 2 - 1
    stacked = forward(cfg, params, x)
    looped = torch.stack([single_module_forward(cfg, params, m, x[m]) for m in range(5)])
    assert stacked.shape == (5, 50, 3)
    torch.testing.assert_close(stacked, looped, rtol=1e-5, atol=1e-5)


def test_chunked_evaluation_and_gradients_equal_one_stacked_call():
    cfg = FieldConfig(depth=3, width=16, rows_per_chunk=64)  # 40 rows/module -> 1 module/chunk
    params = {
        k: v.requires_grad_()
        for k, v in init_params(cfg, 2, 1, 6, generator=torch.Generator().manual_seed(1)).items()
    }
    x = torch.rand(6, 40, 2)
    chunked = evaluate(cfg, params, x)
    whole = forward(cfg, params, x)
    torch.testing.assert_close(chunked, whole)
    g_chunked = torch.autograd.grad(chunked.square().sum(), list(params.values()))
    g_whole = torch.autograd.grad(whole.square().sum(), list(params.values()))
    for a, b in zip(g_chunked, g_whole, strict=True):
        torch.testing.assert_close(a, b)


def test_map_module_chunks_concatenates_dicts_and_tuples():
    params = {"w0": torch.zeros(4, 1, 1)}
    x = torch.arange(4.0).reshape(4, 1, 1)
    out = map_module_chunks(lambda p, t: (t[:, 0, 0], {"t": t * 2}), params, x, rows_per_chunk=1)
    torch.testing.assert_close(out[0], torch.arange(4.0))
    torch.testing.assert_close(out[1]["t"], x * 2)


def test_one_module_broadcasts_and_untrained_field_is_mid_grey():
    """One module serves every row of a stack exactly as its copies would; the forward pass is
    the SIREN written out by hand (a wrong w0, activation or a missing offset breaks it); and
    the offset centres untrained fields on grey (0.0 without it, 1.0 if it were added twice)."""
    cfg = FieldConfig(depth=3, width=16)
    params = init_params(cfg, 2, 3, 1, torch.Generator().manual_seed(0))
    x = torch.rand(7, 10, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = forward(cfg, params, x)
    assert out.shape == (7, 10, 3)
    torch.testing.assert_close(out, forward(cfg, expand_params(params, 7), x))
    hidden = torch.sin(30.0 * (x @ params["w0"] + params["b0"]))
    hidden = torch.sin(30.0 * (hidden @ params["w1"] + params["b1"]))
    torch.testing.assert_close(out, hidden @ params["w2"] + params["b2"] + 0.5)

    many = init_params(cfg, 2, 3, 256, torch.Generator().manual_seed(0))
    grid = torch.rand(256, 64, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert abs(float(forward(cfg, many, grid).mean()) - 0.5) < 0.03  # measured 0.499


def test_parameter_count():
    cfg = FieldConfig(depth=3, width=10)
    params = init_params(cfg, 2, 3, num_modules=4)
    per_module = (2 * 10 + 10) + (10 * 10 + 10) + (10 * 3 + 3)
    assert count_parameters(params) == per_module
    assert count_parameters(params, per_module=False) == 4 * per_module


def test_invalid_kind_and_depth():
    with pytest.raises(ValueError, match="unknown field kind"):
        init_params(FieldConfig(kind="tanh"), 2, 3)
    with pytest.raises(ValueError, match="depth"):
        init_params(FieldConfig(depth=1), 2, 3)
