import math

import pytest
import torch

from mclnf_dist.fields.encodings import spherical_harmonics
from mclnf_dist.fields.grid_field import (
    GridFieldConfig,
    grid_density,
    grid_field_evaluate,
    grid_field_forward,
    init_appearance_codes,
    init_grid_params,
    mean_appearance_code,
)
from mclnf_dist.fields.hash_grid import (
    HashGridConfig,
    hash_encode,
    init_hash_tables,
    is_hashed,
    level_resolutions,
)

PRIMES = (1, 2654435761, 805459861)


def naive_encode_point(cfg: HashGridConfig, tables: torch.Tensor, point: list[float]):
    """One point, written out: per level its cell, 8 corners, their entries, trilinear blend."""
    size = 2**cfg.log2_table_size
    features = []
    for level, res in enumerate(level_resolutions(cfg)):
        scaled = [min(max(c, 0.0), 1.0) * res for c in point]
        low = [min(math.floor(s), res - 1) for s in scaled]
        frac = [s - lo for s, lo in zip(scaled, low, strict=True)]
        value = torch.zeros(cfg.features_per_level, dtype=tables.dtype)
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    cx, cy, cz = low[0] + i, low[1] + j, low[2] + k
                    if (res + 1) ** 3 > size:
                        entry = (cx * PRIMES[0] ^ cy * PRIMES[1] ^ cz * PRIMES[2]) % size
                    else:
                        entry = cx + cy * (res + 1) + cz * (res + 1) ** 2
                    weight = (
                        (frac[0] if i else 1 - frac[0])
                        * (frac[1] if j else 1 - frac[1])
                        * (frac[2] if k else 1 - frac[2])
                    )
                    value = value + weight * tables[level, entry]
        features.append(value)
    return torch.cat(features)


def small_grid(**overrides) -> HashGridConfig:
    base = dict(
        levels=4, log2_table_size=6, features_per_level=2, base_resolution=2, finest_resolution=40
    )
    return HashGridConfig(**{**base, **overrides})


def test_level_resolutions_are_geometric_and_coarse_levels_dense():
    cfg = HashGridConfig()
    res = level_resolutions(cfg)
    assert res[0] == 16 and res[-1] == 2048 and len(res) == 16
    assert all(a < b for a, b in zip(res, res[1:], strict=False))
    hashed = [is_hashed(r, cfg.table_size) for r in res]
    assert hashed == sorted(hashed) and not hashed[0] and hashed[-1]  # a dense prefix
    assert hash_encode(cfg, init_hash_tables(cfg, 1), torch.rand(1, 4, 3)).abs().max() <= 1e-4


@pytest.mark.parametrize("log2_table_size, base_resolution", [(4, 2), (6, 2), (6, 3), (12, 2)])
def test_encoding_equals_naive_reference_in_values_and_gradients(log2_table_size, base_resolution):
    """2^4 entries: every level hashes and collides; 2^12: coarse levels dense, fine hashed;
    2^6 with base 3: the coarsest level's 4^3 vertices fill the table exactly (dense)."""
    cfg = small_grid(log2_table_size=log2_table_size, base_resolution=base_resolution)
    gen = torch.Generator().manual_seed(log2_table_size)
    tables = (torch.randn(2, 4, cfg.table_size, 2, generator=gen)).requires_grad_()
    corners = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 1], [0, 1, 0.5]], dtype=torch.float32)
    points = torch.cat([corners, torch.rand(21, 3, generator=gen)]).reshape(1, 25, 3)
    points = torch.cat([points, torch.rand(1, 25, 3, generator=gen)])  # module 1: other points
    fast = hash_encode(cfg, tables, points)
    naive = torch.stack(
        [
            torch.stack([naive_encode_point(cfg, tables[m], p.tolist()) for p in points[m]])
            for m in range(2)
        ]
    )
    assert fast.shape == (2, 25, 8)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(fast.shape, generator=gen)
    (grad_fast,) = torch.autograd.grad((fast * upstream).sum(), tables)
    (grad_naive,) = torch.autograd.grad((naive * upstream).sum(), tables)
    torch.testing.assert_close(grad_fast, grad_naive, rtol=1e-5, atol=1e-5)
    if log2_table_size == 4:  # collisions: more distinct corners than entries at a hashed level
        finest = level_resolutions(cfg)[-1]
        assert is_hashed(finest, cfg.table_size)
        cells = {tuple(c) for c in (points[0] * finest).floor().int().tolist()}
        assert len(cells) > cfg.table_size


def test_stacked_modules_equal_a_loop_and_shared_tables_broadcast():
    cfg = small_grid(log2_table_size=8)
    gen = torch.Generator().manual_seed(3)
    tables = torch.randn(3, 4, cfg.table_size, 2, generator=gen)
    points = torch.rand(3, 50, 3, generator=gen)
    stacked = hash_encode(cfg, tables, points)
    looped = torch.cat([hash_encode(cfg, tables[m : m + 1], points[m : m + 1]) for m in range(3)])
    assert torch.equal(stacked, looped)
    shared = hash_encode(cfg, tables[:1], points)
    assert torch.equal(shared, hash_encode(cfg, tables[:1].expand(3, -1, -1, -1), points))


def test_spherical_harmonics_match_closed_form():
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.8]])
    sh = spherical_harmonics(dirs, degree=4)
    assert sh.shape == (4, 16)
    torch.testing.assert_close(sh[:, 0], torch.full((4,), 0.28209479))
    torch.testing.assert_close(sh[:, 1:4], 0.48860251 * dirs[:, [1, 2, 0]])
    # (l=2, m=0) = sqrt(5 / 16 pi) (3 z^2 - 1); (l=3, m=0) = sqrt(7 / 16 pi) (5 z^3 - 3 z).
    z = dirs[:, 2]
    torch.testing.assert_close(sh[:, 6], math.sqrt(5 / (16 * math.pi)) * (3 * z**2 - 1))
    torch.testing.assert_close(sh[:, 12], math.sqrt(7 / (16 * math.pi)) * (5 * z**3 - 3 * z))
    # Orthonormal on the sphere: a Monte-Carlo Gram matrix is 4 pi-scaled identity.
    many = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    basis = spherical_harmonics(many, degree=4)
    gram = basis.T @ basis * (4 * math.pi / many.shape[0])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)
    assert spherical_harmonics(dirs, degree=2).shape == (4, 4)


def tiny_field(appearance: int = 0) -> GridFieldConfig:
    return GridFieldConfig(
        grid=small_grid(log2_table_size=8),
        hidden_width=16,
        appearance_features=appearance,
        rows_per_chunk=40,  # grid_field_evaluate: one module per chunk
    )


def test_stacked_field_equals_a_loop_over_modules_in_values_and_gradients():
    cfg = tiny_field(appearance=4)
    gen = torch.Generator().manual_seed(5)
    params = {k: v.requires_grad_() for k, v in init_grid_params(cfg, 3, gen).items()}
    params["hash_tables"].data.normal_(generator=gen)  # non-trivial features
    points = torch.rand(3, 40, 3, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(3, 40, 3, generator=gen), dim=-1)
    codes = init_appearance_codes(6, 4, std=1.0, generator=gen)
    appearance = codes[torch.randint(0, 6, (3, 40), generator=gen)]
    density, rgb = grid_field_evaluate(cfg, params, points, dirs, appearance)
    assert density.shape == (3, 40) and rgb.shape == (3, 40, 3)
    assert (density >= 0).all() and ((rgb >= 0) & (rgb <= 1)).all()
    looped = [
        grid_field_evaluate(
            cfg,
            {k: v[m : m + 1] for k, v in params.items()},
            *(t[m : m + 1] for t in (points, dirs, appearance)),
        )
        for m in range(3)
    ]
    torch.testing.assert_close(density, torch.cat([d for d, _ in looped]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rgb, torch.cat([c for _, c in looped]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grid_density(cfg, params, points), density)
    one_call = grid_field_forward(cfg, params, points, dirs, appearance)
    torch.testing.assert_close(one_call[0], density, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(one_call[1], rgb, rtol=1e-6, atol=1e-6)
    loss = density.sum() + rgb.square().sum()
    loss_looped = sum(d.sum() + c.square().sum() for d, c in looped)
    grads = torch.autograd.grad(loss, list(params.values()))
    grads_looped = torch.autograd.grad(loss_looped, list(params.values()))
    for name, a, b in zip(params, grads, grads_looped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert a.abs().sum() > 0, name  # every parameter gets a gradient
    assert mean_appearance_code(codes).shape == (4,)
    with pytest.raises(ValueError, match="appearance"):
        grid_field_evaluate(cfg, params, points, dirs)


def test_field_supports_second_order_gradients():
    """MAML differentiates through a gradient step (trunc_exp, gather and bmm twice)."""
    cfg = tiny_field()
    params = {k: v.requires_grad_() for k, v in init_grid_params(cfg, 1).items()}
    points, dirs = (
        torch.rand(1, 30, 3),
        torch.nn.functional.normalize(torch.randn(1, 30, 3), dim=-1),
    )
    density, rgb = grid_field_evaluate(cfg, params, points, dirs)
    inner = density.square().mean() + rgb.square().mean()
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    adapted = {k: v - 0.1 * g for (k, v), g in zip(params.items(), grads, strict=True)}
    outer = sum(t.square().mean() for t in grid_field_evaluate(cfg, adapted, points, dirs))
    meta = torch.autograd.grad(outer, params["hash_tables"])[0]
    assert torch.isfinite(meta).all() and meta.abs().sum() > 0


def spheres_target(points: torch.Tensor) -> torch.Tensor:
    """(N, 3) -> (N, 3) rgb: four coloured balls over a grey background, sharp edges."""
    centres = torch.tensor([[0.3, 0.3, 0.3], [0.7, 0.3, 0.6], [0.4, 0.7, 0.5], [0.7, 0.7, 0.2]])
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 0.9, 0.2], [0.1, 0.2, 1.0], [0.9, 0.9, 0.1]])
    rgb = torch.full((points.shape[0], 3), 0.5)
    for centre, colour in zip(centres, colours, strict=True):
        inside = (points - centre).norm(dim=-1) < 0.18
        rgb[inside] = colour
    return rgb


@pytest.fixture
def one_thread():
    """Small tensors gain nothing from 2 threads, and on a shared 2-core machine OpenMP's
    spinning threads made this test 10x slower (61 s vs 5 s, measured under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_grid_field_learns_coloured_spheres_fast(one_thread):
    """Direct rgb regression at points (no rendering): Adam 1e-2, 200 steps, a few seconds.
    Measured: 17.2 dB -> 33.6 dB."""
    torch.manual_seed(0)
    cfg = GridFieldConfig(
        grid=HashGridConfig(levels=8, log2_table_size=14, base_resolution=4, finest_resolution=64),
        hidden_width=32,
    )
    params = {k: v.requires_grad_() for k, v in init_grid_params(cfg, 1).items()}
    optimiser = torch.optim.Adam(params.values(), lr=1e-2)
    test_points = torch.rand(1, 8192, 3)
    test_target = spheres_target(test_points[0])[None]
    up = torch.tensor([0.0, 0.0, 1.0])

    def psnr() -> float:
        with torch.no_grad():
            _, rgb = grid_field_evaluate(cfg, params, test_points, up.expand(1, 8192, 3))
        return -10 * math.log10((rgb - test_target).square().mean().item())

    start = psnr()
    for _ in range(200):
        points = torch.rand(1, 4096, 3)
        _, rgb = grid_field_evaluate(cfg, params, points, up.expand(1, 4096, 3))
        loss = (rgb - spheres_target(points[0])[None]).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    end = psnr()
    assert end > start + 10, (start, end)
    assert end > 30.0, (start, end)
