"""Fixtures of the jobs' tests: a small saved city model (render, view)."""

import json
from pathlib import Path

import pytest
import torch

from mclnf_dist.city.model import save_city_model
from mclnf_dist.nerf.field import field_for_scene, init_radiance_params
from mclnf_dist.runs import COMPLETE
from mclnf_dist.scenes.demo_city import CityConfig, make_city
from mclnf_dist.scenes.partition import BlockPartition
from mclnf_dist.scenes.scene import load_scene


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A two-block city model (random modules) of a small generated city."""
    root = tmp_path_factory.mktemp("render")
    scene_root = make_city(str(root / "scene"), CityConfig(width=16, height=12))
    scene = load_scene(scene_root, "all")
    partition = BlockPartition.from_cameras(scene.camera_centers(), 2, 1)
    field = field_for_scene(scene)
    params = init_radiance_params(field, 2, torch.Generator().manual_seed(0))
    scene_info = {"root": scene_root, "options": {}}
    run = root / "work" / "runs" / "city-demo" / "20260101-000000-abcd"
    save_city_model(
        str(run / "city_model"), "blocks-meta", field, params, partition, [0, 1], True, scene_info
    )
    (run / COMPLETE).write_text(json.dumps({"finished": "2026-01-01T00:00:00"}))
    return run / "city_model"
