"""Automatic boxes: an inward-facing capture (an object filmed from around it) is boxed where its
cameras look, not around the cameras; street, outward and forward-facing captures keep the box
around their cameras; instant-ngp's ``aabb_scale`` gives way only to a clearly tighter region."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mclnf_dist.scenes.demo_city import CityConfig, look_along, make_city
from mclnf_dist.scenes.scene import load_scene
from mclnf_dist.scenes.scene_bounds import aabb_box, camera_box
from mclnf_dist.scenes.scene_inward import classify_capture, least_squares_focus

LEGO_ANGLE_X = 0.6911112070083618  # Blender's synthetic scenes: 40 degrees, 800x800


def hemisphere(count: int, radius: float = 4.0) -> np.ndarray:
    """(count, 4, 4) cameras on the upper hemisphere (Fibonacci spiral) looking at the origin."""
    index = np.arange(count) + 0.5
    height = 0.05 + 0.9 * index / count  # from near the equator to near the pole
    azimuth = np.pi * (1 + 5**0.5) * index
    ring = np.sqrt(1 - height**2)
    eyes = radius * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), height], axis=-1)
    return np.stack([look_along(eye, -eye) for eye in eyes])


def write_blender(root: Path, poses: np.ndarray, splits=("train", "val", "test")) -> Path:
    """Blender per-split files (``camera_angle_x`` only, 4x4 RGBA images), poses dealt out."""
    for k, split in enumerate(splits):
        frames = []
        for i in range(k, len(poses), len(splits)):
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": poses[i].tolist()})
        meta = {"camera_angle_x": LEGO_ANGLE_X, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def test_inward_hemisphere_is_boxed_around_the_object_not_the_cameras(tmp_path):
    poses = hemisphere(60)
    root = write_blender(tmp_path, poses)
    scene = load_scene(str(root), "all")
    box = scene.scene_box
    side = box[1] - box[0]
    print(f"hemisphere of 60 views at radius 4: box {np.round(box, 3).tolist()}, side {side}")
    assert side.max() < 3.5  # about the object's size
    assert (box[0] <= -1).all() and (box[1] >= 1).all()  # holds an object of radius 1
    today = camera_box(str(root), poses, far=6.0)  # the rule for captures that are not inward
    print(f"the box around the cameras (before): {np.round(today, 3).tolist()}")
    assert (today[1] - today[0]).min() > 6
    assert scene.box_note.startswith("scene box from an inward-facing capture")
    assert "100% of the views converge on [" in scene.box_note and "\n" not in scene.box_note
    assert (scene.near, scene.far) == (2.0, 6.0)  # Blender's depth range
    for split in ("train", "test"):  # one box, whatever the split
        np.testing.assert_array_equal(load_scene(str(root), split).scene_box, box)
    given = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))  # --field.scene-box still wins
    np.testing.assert_array_equal(load_scene(str(root), "train", scene_box=given).scene_box, given)


def test_inward_box_tolerates_close_ups_and_stray_views(tmp_path):
    """A few close-ups (1 in 15 of the views at half the distance) and views of elsewhere (1 in
    15) neither shrink the region below the object nor grow it to the cameras."""
    poses = hemisphere(60)
    poses[::15, :3, 3] *= 0.5  # close-ups: still looking at the origin
    poses[7::15, :3, :3] = poses[7::15, :3, :3] @ np.diag([-1.0, 1.0, -1.0])  # looking away
    scene = load_scene(str(write_blender(tmp_path, poses)), "all")
    side = scene.scene_box[1] - scene.scene_box[0]
    assert 2.5 < side.max() < 3.5
    assert "93% of the views converge" in scene.box_note


def make_street_city(root: Path) -> Path:
    """The procedural city's street views only (1.7 m up, along the streets), its box removed."""
    cfg = CityConfig(width=8, height=8, aerial_views_per_block=0, street_views_per_block=8)
    make_city(str(root), cfg)
    meta = json.loads((root / "transforms.json").read_text())
    del meta["scene_box"]
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_street_capture_keeps_the_box_around_its_cameras(tmp_path):
    root = make_street_city(tmp_path)
    scene = load_scene(str(root), "all")
    poses = np.stack([f.c2w for f in scene.frames])
    today = camera_box(str(root), poses, scene.far)
    np.testing.assert_array_equal(scene.scene_box, today)
    assert scene.box_note.startswith("scene box from cameras: [[")
    assert "not inward-facing: the optical axes' closest point" in scene.box_note


def look_at_origin_cones(count: int) -> np.ndarray:
    tangent = math.tan(LEGO_ANGLE_X / 2)
    return np.full((count, 4), tangent)


@pytest.mark.parametrize(
    "kind",
    ["forward-facing", "one line looking ahead", "grid looking outward", "narrow arc"],
)
def test_captures_that_are_not_inward_facing(kind):
    rng = np.random.default_rng(0)
    if kind == "forward-facing":  # LLFF: cameras on a small plane, all looking down -y
        eyes = np.c_[rng.uniform(-0.5, 0.5, 20), np.zeros(20), rng.uniform(-0.3, 0.3, 20)]
        forwards = np.c_[rng.normal(0, 0.03, 20), np.ones(20), rng.normal(0, 0.03, 20)]
    elif kind == "one line looking ahead":  # a car driving along x
        eyes = np.c_[np.linspace(0, 50, 20), np.zeros(20), np.full(20, 1.7)]
        forwards = np.c_[np.ones(20), rng.normal(0, 0.1, 20), np.zeros(20)]
    elif kind == "grid looking outward":
        grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(4.0)), -1).reshape(-1, 2) * 10
        eyes = np.c_[grid, np.full(20, 1.7)]
        yaw = rng.uniform(0, 2 * np.pi, 20)
        forwards = np.c_[np.cos(yaw), np.sin(yaw), np.zeros(20)]
    else:  # a 40 degree arc of cameras around the origin: too narrow to bound the depth
        angle = np.radians(np.linspace(-20, 20, 20))
        eyes = 4 * np.c_[np.cos(angle), np.sin(angle), np.zeros(20)]
        forwards = -eyes
    poses = np.stack([look_along(e, f) for e, f in zip(eyes, forwards, strict=True)])
    capture = classify_capture(poses, look_at_origin_cones(20))
    assert not capture.inward, capture.why


FOX = Path("/work/shared/scenes/fox")


def test_real_fox_capture_gets_the_region_its_cameras_look_at(fox_scene):
    scene = load_scene(str(fox_scene), "all", downscale=8)
    meta = json.loads((fox_scene / "transforms.json").read_text())
    before = aabb_box(str(fox_scene), meta)  # the box before: aabb_scale 4's
    box = scene.scene_box
    poses = np.stack([f.c2w for f in scene.frames])
    focus = least_squares_focus(poses)
    print(f"fox: focus {np.round(focus, 3).tolist()}")
    print(f"fox before: {np.round(before, 3).tolist()} side {before[1] - before[0]}")
    print(f"fox after:  {np.round(box, 3).tolist()} side {box[1] - box[0]}")
    assert ((box[0] < focus) & (focus < box[1])).all()
    assert (box[0] >= before[0]).all() and (box[1] <= before[1]).all()
    assert np.prod(box[1] - box[0]) < 0.5 * np.prod(before[1] - before[0])
    assert classify_capture(poses, np.stack([cone(f) for f in scene.frames])).inward
    assert "than the box of aabb_scale 4" in scene.box_note


def cone(frame) -> np.ndarray:
    """Image-edge tangents of a loaded frame."""
    w, h = frame.width, frame.height
    return np.array([frame.cx / frame.fx, (w - frame.cx) / frame.fx,
                     (h - frame.cy) / frame.fy, frame.cy / frame.fy])  # fmt: skip
