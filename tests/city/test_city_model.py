"""A saved city model reads back (``load_city_model``, the one reader) and renders the very image
it rendered before saving, locally and on an object-store-like URI."""

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mclnf_dist.city.model import load_city_model, save_city_model
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params
from mclnf_dist.nerf.render import render_view
from mclnf_dist.scenes.partition import BlockPartition
from mclnf_dist.scenes.routing import module_router

BOX = ((0.0, 0.0, 0.0), (4.0, 2.0, 2.0))


def two_blocks() -> BlockPartition:
    return BlockPartition(
        centroids=[[1.0, 1.0, 0.0], [3.0, 1.0, 0.0]], grid_shape=(2, 1),
        bounds=[[0.0, 0.0], [4.0, 2.0]], margin=0.0,
    )  # fmt: skip


def camera_above() -> SimpleNamespace:
    c2w = np.eye(4)
    c2w[:3, 3] = [2.0, 1.0, 6.0]  # above the box, looking down (-z): sees both blocks
    return SimpleNamespace(c2w=c2w, fx=4.0, fy=4.0, cx=4.0, cy=3.0, width=8, height=6)


@pytest.mark.parametrize("importance", [0, 4])
@pytest.mark.parametrize("where", ["local", "memory"])
def test_saved_city_model_renders_the_same_image(tmp_path, where, importance):
    mlp = FieldConfig(kind="relu_pe", depth=3, width=16, pe_frequencies=3, output_offset=0.0)
    field = RadianceFieldConfig(
        mlp=mlp, num_samples=8, num_importance_samples=importance, scene_box=BOX,
        background=(0.2, 0.5, 0.9), density_bias=-1.0,
    )  # fmt: skip
    params = init_radiance_params(field, 2, torch.Generator().manual_seed(4))
    partition, order = two_blocks(), [1, 0]  # block 1 arrived first: it is module 0
    route = module_router(partition, order, modular=True)
    before = render_view(field, params, camera_above(), route, near=0.1, far=20.0)
    swapped = module_router(partition, [0, 1], modular=True)
    assert not torch.allclose(before, render_view(field, params, camera_above(), swapped, 0.1))

    folder = str(tmp_path / "city_model") if where == "local" else f"memory://{uuid.uuid4().hex}"
    save_city_model(folder, "mod", field, params, partition, order, modular=True)
    model = load_city_model(folder, "mod")
    assert model.field == field
    for key, value in params.items():
        torch.testing.assert_close(model.params[key], value, rtol=0, atol=0)
    torch.testing.assert_close(model.render(camera_above(), 0.1, 20.0), before, rtol=0, atol=0)


def test_one_network_routes_every_point_to_module_zero_and_a_missing_model_is_named(tmp_path):
    route = module_router(two_blocks(), [0, 1], modular=False)
    assert route(torch.tensor([[0.5, 1.0, 0.0], [3.5, 1.0, 0.0]])).tolist() == [0, 0]
    with pytest.raises(MclnfError, match="no saved city model 'mim'"):
        load_city_model(str(tmp_path), "mim")
