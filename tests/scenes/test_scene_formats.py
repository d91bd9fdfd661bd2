"""The scene formats load as they are: Blender per-split files (split ``all`` = their union),
instant-ngp's real fox (lens, ``aabb_scale``, no splits), downscaling with exact intrinsics, and
boxes derived when a scene has none (the same box for every split)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.nerf.field import field_for_scene
from mclnf_dist.nerf.rays import camera_rays
from mclnf_dist.scenes.scene import load_frame_image, load_scene

FOX = Path("/work/shared/scenes/fox")


def test_blender_per_split_scene_all_is_the_union_with_one_box(tmp_path, blender_scene_factory):
    blender_scene = blender_scene_factory
    root = blender_scene(tmp_path, {"train": 5, "val": 2, "test": 3})
    every = load_scene(str(root), "all")
    assert [Path(f.file_path).name for f in every.frames] == [f"r_{i}.png" for i in range(10)]
    assert every.frames[6].where.endswith("transforms_val.json: frame 1 (./val/r_6)")
    # a ring of cameras looking at the origin: an inward-facing capture, boxed where it looks
    assert every.box_note.startswith("scene box from an inward-facing capture, the region 90%")
    assert every.box_note.endswith("around it; no scene_box in transforms_train.json)")
    box = every.scene_box
    assert (box[0] < -1.4).all() and (box[1] > 1.4).all()  # holds an object around the origin
    side = box[1] - box[0]
    assert side.max() < 3.5 and np.allclose(side, side[0])  # a cube, not the ring's 8 units
    assert (every.near, every.far) == (2.0, 6.0)  # Blender's depth range
    for split, count in (("train", 5), ("val", 2), ("test", 3)):
        scene = load_scene(str(root), split)
        assert len(scene.frames) == count
        np.testing.assert_array_equal(scene.scene_box, box)  # one box, whatever the split
    image = load_frame_image(every, every.frames[9])
    assert (image[0, 0] == 255).all() and (image[8, 8] == [200, 40, 90]).all()  # on white
    assert load_scene(str(root), "train", scene_box=((-2, -2, -2), (2, 2, 2))).scene_box[1][0] == 2
    with pytest.raises(MclnfError, match=r"no transforms_val.json \(has transforms_train.json"):
        load_scene(str(blender_scene(tmp_path / "two", {"train": 2, "test": 1})), "val")


def test_downscale_averages_blocks_and_keeps_every_ray(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)  # odd size: last row/column dropped
    Image.fromarray(pixels).save(tmp_path / "a.png")
    frames = [
        {
            "file_path": "a.png",
            "transform_matrix": [[1, 0, 0, 0], [0, 0, -1, -3], [0, 1, 0, 1], [0, 0, 0, 1]],
        }
    ]
    meta = {"fl_x": 8.0, "fl_y": 9.0, "cx": 4.3, "cy": 3.6, "w": 9, "h": 7, "near": 0.1, "far": 5,
            "frames": frames}  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    full = load_scene(str(tmp_path), "all").frames[0]
    scene = load_scene(str(tmp_path), "all", downscale=2)
    half = scene.frames[0]
    assert (half.width, half.height, half.fx, half.fy, half.cx, half.cy) == (
        4,
        3,
        4,
        4.5,
        2.15,
        1.8,
    )
    expected = pixels[:6, :8].reshape(3, 2, 4, 2, 3).mean(axis=(1, 3)).round()
    np.testing.assert_array_equal(load_frame_image(scene, half), expected)
    # pixel (u', v') of the small image sees what the centre of its 2x2 block saw: the corner
    # shared by full-size pixels (2u', 2v') .. (2u'+1, 2v'+1)
    _, small = camera_rays(half.c2w, half.fx, half.fy, half.cx, half.cy, 4, 3)
    u, v = np.meshgrid(np.arange(4) * 2 + 1.0, np.arange(3) * 2 + 1.0)
    x, y = (u.ravel() - full.cx) / full.fx, -(v.ravel() - full.cy) / full.fy
    direction = np.stack([x, y, -np.ones_like(x)], -1) @ np.asarray(full.c2w)[:3, :3].T
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    np.testing.assert_allclose(small.numpy(), direction, atol=1e-6)
    with pytest.raises(MclnfError, match="downscale 8 exceeds the image size 9x7"):
        load_scene(str(tmp_path), "all", downscale=8)


def test_real_fox_scene_lens_aabb_box_and_holdout(fox_scene):
    with pytest.raises(MclnfError, match=r"frame 4 \(images/0005.jpg\): image file not found"):
        load_scene(str(FOX), "all")  # the copy as it is: 17 of its 67 frames have no image
    every = load_scene(str(fox_scene), "all", downscale=16)
    train, test = load_scene(str(fox_scene), "train", 16), load_scene(str(fox_scene), "test", 16)
    assert (len(every.frames), len(train.frames), len(test.frames)) == (50, 43, 7)
    assert [Path(f.file_path).name for f in test.frames][:2] == ["0001.jpg", "0012.jpg"]
    frame = train.frames[0]
    assert (frame.width, frame.height) == (67, 120) and frame.fx == pytest.approx(1375.52 / 16)
    assert frame.distortion.model == "OPENCV" and frame.distortion.p1 == pytest.approx(-0.000980296)
    half_side = 2 / 0.33  # instant-ngp: aabb_scale 4 around 0.5, scale 0.33, offset 0.5
    box = every.scene_box  # inward-facing: the looked-at region, inside aabb_scale's box
    assert (box[0] >= -half_side).all() and (box[1] <= half_side).all()
    assert (box[1] - box[0]).max() < 0.7 * 2 * half_side
    assert every.box_note.startswith("scene box from an inward-facing capture")
    assert "than the box of aabb_scale 4 (instant-ngp convention)" in every.box_note
    assert "no scene_box in transforms.json)" in every.box_note and "\n" not in every.box_note
    centres = every.camera_centers()
    assert 0 < every.near < 0.1 and every.far > np.linalg.norm(centres, axis=-1).max()
    assert load_frame_image(test, test.frames[0]).shape == (120, 67, 3)
    explicit = ((-1.0, -1.0, -1.0), (1.0, 2.0, 1.0))
    assert field_for_scene(every, scene_box=explicit).scene_box == explicit  # explicit box wins
    assert field_for_scene(every).scene_box[0][0] == pytest.approx(box[0][0])
