import pytest
import torch

from mclnf_dist.fields.routing import append_modules, route, routed_forward
from mclnf_dist.fields.stacked_mlp import FieldConfig, forward, init_params


def test_routed_forward_uses_each_coordinates_own_module():
    cfg = FieldConfig(depth=3, width=16)
    params = init_params(cfg, 3, 4, num_modules=5, generator=torch.Generator().manual_seed(0))
    coords = torch.rand(101, 3)
    ids = torch.randint(0, 5, (101,), generator=torch.Generator().manual_seed(1))
    ids[:3] = 4  # uneven counts
    out = routed_forward(cfg, params, coords, ids)
    for p in range(101):
        m = int(ids[p])
        one = {k: v[m : m + 1] for k, v in params.items()}
        torch.testing.assert_close(out[p], forward(cfg, one, coords[p][None, None])[0, 0])


def test_route_pads_and_masks():
    coords = torch.arange(10.0).reshape(5, 2)
    batch = route(coords, torch.tensor([1, 0, 1, 1, 0]), num_modules=3)
    assert batch.x.shape == (3, 3, 2)
    assert batch.mask.sum(1).tolist() == [2, 3, 0]
    torch.testing.assert_close(batch.x.reshape(-1, 2)[batch.order], coords)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        route(coords, torch.tensor([0, 0, 3, 0, 0]), 3)


def test_appending_a_module_leaves_earlier_modules_unchanged():
    cfg = FieldConfig(depth=3, width=8)
    params = init_params(cfg, 2, 1, 2, generator=torch.Generator().manual_seed(0))
    coords = torch.rand(20, 2)
    ids = torch.randint(0, 2, (20,))
    before = routed_forward(cfg, params, coords, ids)
    grown = append_modules(params, init_params(cfg, 2, 1, 1))
    assert grown["w0"].shape[0] == 3
    torch.testing.assert_close(routed_forward(cfg, grown, coords, ids), before)
