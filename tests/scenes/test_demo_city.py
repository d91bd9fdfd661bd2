"""The procedural city: deterministic, exact (images = casting camera_rays), crash-safe."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from mclnf_dist.nerf.rays import camera_rays
from mclnf_dist.scenes import demo_city as city
from mclnf_dist.scenes.city_geometry import BUILDING, SKY, cast_rays, safe_directions, slab
from mclnf_dist.scenes.city_render import phase_lighting, shade_rays
from mclnf_dist.scenes.demo_city import CityConfig, city_layout, make_city
from mclnf_dist.scenes.scene import load_frame_image, load_scene

SMALL = CityConfig(width=16, height=12, aerial_views_per_block=2, street_views_per_block=2,
                   time_phases=2, holdout_every=4)  # fmt: skip


def folder_bytes(root) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, root)] = open(path, "rb").read()
    return files


@pytest.fixture(scope="module")
def small_city(tmp_path_factory) -> str:
    return make_city(str(tmp_path_factory.mktemp("city")), SMALL)


def test_same_seed_same_bytes_other_seed_other_city(small_city, tmp_path):
    again = folder_bytes(make_city(str(tmp_path / "again"), SMALL))
    assert again == folder_bytes(small_city)
    assert len(again) == 1 + 16 * 2  # transforms.json + 16 cameras x 2 phases
    other = folder_bytes(make_city(str(tmp_path / "other"), replace(SMALL, seed=1)))
    assert other["transforms.json"] != again["transforms.json"]


def test_images_are_exactly_the_cast_of_camera_rays(small_city):
    scene = load_scene(small_city, "all")
    layout = city_layout(SMALL)
    assert len(scene.frames) == 32 and {f.time for f in scene.frames} == {0.0, 1.0}
    for frame in scene.frames:
        origins, directions = camera_rays(
            frame.c2w, frame.fx, frame.fy, frame.cx, frame.cy, frame.width, frame.height
        )
        lighting = phase_lighting(round(frame.time), SMALL.time_phases)
        colors = shade_rays(layout, origins.double().numpy(), directions.double().numpy(), lighting)
        image = load_frame_image(scene, frame)
        np.testing.assert_array_equal(colors.reshape(image.shape), image)
    # Lighting phases differ; the sky (background) does not.
    first, second = (load_frame_image(scene, scene.frames[k]) for k in (0, 16))
    assert (first != second).any()
    np.testing.assert_allclose(scene.background, city.SKY_COLOR)


def test_scene_metadata_splits_and_cameras(small_city):
    meta = json.loads(open(os.path.join(small_city, "transforms.json")).read())
    splits = {s: load_scene(small_city, s) for s in ("train", "val", "test")}
    cameras = {s: {f.file_path for f in scene.frames} for s, scene in splits.items()}
    assert sum(len(c) for c in cameras.values()) == 32 and len(set.union(*cameras.values())) == 32
    assert len(cameras["val"]) == len(cameras["test"]) == 8  # 4 of 16 cameras, 2 phases each
    by_camera = {}
    for split in ("train", "val", "test"):
        for frame in meta["frames"]:
            if frame["file_path"] in meta[f"{split}_filenames"]:
                by_camera.setdefault(frame["camera"], set()).add(split)
    assert all(len(s) == 1 for s in by_camera.values())  # a camera's phases share one split
    scene = splits["train"]
    box = scene.scene_box
    heights = {f["kind"]: [] for f in meta["frames"]}
    for frame in meta["frames"]:
        heights[frame["kind"]].append(frame["transform_matrix"][2][3])
    assert np.allclose(heights["street"], 1.7)
    assert min(heights["aerial"]) > box[1, 2]  # aerial cameras are above every roof
    assert scene.near == 0.05 and scene.far > np.linalg.norm(box[1] - box[0]) / 2


def test_caster_matches_brute_force_and_stays_in_scene_box():
    cfg = CityConfig(blocks_x=3, blocks_y=2, width=24, height=16)
    layout = city_layout(cfg)
    c2ws = np.stack([c2w for _, c2w in city.city_cameras(cfg, layout)])
    origins, directions = camera_rays(c2ws, cfg.focal, cfg.focal, 12, 8, 24, 16)
    origins = origins.reshape(-1, 3).double().numpy()
    directions = directions.reshape(-1, 3).double().numpy()
    hits = cast_rays(layout, origins, directions)
    safe = safe_directions(directions)
    entry, exit_, _ = slab(
        origins[:, None], 1 / safe[:, None], layout.boxes[None, :, :3], layout.boxes[None, :, 3:]
    )  # every ray against every building
    entry = np.where((entry <= exit_) & (entry > 0), entry, np.inf)
    building = hits.kind == BUILDING
    np.testing.assert_array_equal(hits.box[building], entry[building].argmin(axis=1))
    np.testing.assert_allclose(hits.depth[building], entry[building].min(axis=1))
    assert np.isinf(entry[hits.kind == SKY]).all()
    assert {0, 1, 2} <= set(hits.kind.tolist())
    solid = hits.kind != SKY
    points = origins[solid] + hits.depth[solid, None] * directions[solid]
    box = layout.scene_box()
    assert ((points >= box[0] - 1e-6) & (points <= box[1] + 1e-6)).all()


def test_roof_hit_straight_down():
    layout = city_layout(CityConfig())
    lower, upper = layout.boxes[0, :3], layout.boxes[0, 3:]
    eye = np.array([[(lower[0] + upper[0]) / 2, (lower[1] + upper[1]) / 2, 100.0]])
    hits = cast_rays(layout, eye, np.array([[0.0, 0.0, -1.0]]))
    assert hits.box[0] == 0 and hits.axis[0] == 2 and hits.depth[0] == 100.0 - upper[2]


def test_crash_leaves_no_complete_looking_scene(tmp_path, monkeypatch):
    target = str(tmp_path / "scene")
    make_city(target, replace(SMALL, seed=3))  # an old complete scene
    written = []

    def failing_write(path, image, fs):
        if len(written) == 5:
            raise OSError("disk full")
        written.append(path)

    monkeypatch.setattr(city, "write_png", failing_write)
    with pytest.raises(OSError, match="disk full"):
        make_city(target, SMALL)
    assert not os.path.exists(os.path.join(target, "transforms.json"))
    assert not [n for n in os.listdir(os.path.join(target, "images")) if n.startswith(".")]


def test_complete_scene_is_not_rewritten(small_city, monkeypatch):
    monkeypatch.setattr(city, "write_png", lambda *args: pytest.fail("rewrote an image"))
    assert make_city(small_city, SMALL) == small_city


def test_bad_config_is_one_line_error():
    from mclnf_dist.errors import MclnfError

    with pytest.raises(MclnfError, match="blocks_x must be >= 1"):
        CityConfig(blocks_x=0)
    with pytest.raises(MclnfError, match="street_width"):
        CityConfig(street_width=100.0)
