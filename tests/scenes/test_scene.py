"""transforms.json scenes: every supported layout round-trips; every bad input is one clear line."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.scene import load_frame_image, load_scene


def pose(x: float) -> list[list[float]]:
    c2w = np.eye(4)
    c2w[:3, 3] = [x, 0.0, 1.0]
    return c2w.tolist()


def write_image(path, width: int, height: int, mode: str = "RGB", value: int = 100) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = np.full((height, width, channels), value, dtype=np.uint8)
    if mode == "RGBA":
        pixels[..., 3] = 0  # fully transparent
        pixels[0, 0, 3] = 255
    Image.fromarray(pixels, mode).save(path)


def nerfstudio_scene(root, frames: int = 4, **top) -> str:
    meta = {"fl_x": 10.0, "fl_y": 11.0, "cx": 4.0, "cy": 3.0, "w": 8, "h": 6, "near": 0.1,
            "far": 9.0, "frames": [], **top}  # fmt: skip
    for i in range(frames):
        name = f"images/f{i}.png"
        write_image(root / name, 8, 6, value=10 * i)
        meta["frames"].append({"file_path": name, "transform_matrix": pose(i), "time": i / 4})
    (root / "transforms.json").write_text(json.dumps(meta))
    return str(root)


def edit(root, change) -> None:
    path = root / "transforms.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_nerfstudio_round_trip(tmp_path):
    scene = load_scene(nerfstudio_scene(tmp_path), holdout_every=0)
    assert scene.split == "train" and len(scene.frames) == 4
    assert (scene.near, scene.far) == (0.1, 9.0) and scene.box_note.startswith("scene box from")
    frame = scene.frames[2]
    assert (frame.fx, frame.fy, frame.cx, frame.cy, frame.width, frame.height) == (
        10.0, 11.0, 4.0, 3.0, 8, 6
    )  # fmt: skip
    assert frame.time == 0.5 and frame.c2w.dtype == np.float64
    np.testing.assert_array_equal(frame.c2w, pose(2))
    image = load_frame_image(scene, frame)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8 and (image == 20).all()
    np.testing.assert_array_equal(scene.camera_centers()[:, 0], [0, 1, 2, 3])
    # The JSON file itself is accepted as the scene root.
    assert len(load_scene(str(tmp_path / "transforms.json"), holdout_every=0).frames) == 4
    # Without split information every 8th frame (0, 8, ...) is held out as test (and val).
    assert [f.time for f in load_scene(str(tmp_path)).frames] == [0.25, 0.5, 0.75]
    assert [f.time for f in load_scene(str(tmp_path), "test").frames] == [0.0]
    assert [f.time for f in load_scene(str(tmp_path), "val", holdout_every=2).frames] == [0, 0.5]


def test_split_lists_per_frame_splits_and_scene_box(tmp_path):
    nerfstudio_scene(tmp_path)

    def lists(meta):
        meta["train_filenames"] = ["images/f0.png", "images/f1.png", "images/f3.png"]
        meta["val_filenames"] = ["./images/f2.png"]
        meta["scene_box"] = [[-1, -1, -1], [4, 1, 2]]
        del meta["near"], meta["far"]

    edit(tmp_path, lists)
    assert [f.time for f in load_scene(str(tmp_path), "val").frames] == [0.5]
    assert len(load_scene(str(tmp_path), "all").frames) == 4
    scene = load_scene(str(tmp_path), "train")
    assert len(scene.frames) == 3 and scene.scene_box.shape == (2, 3)
    assert scene.far >= math.dist([0, 0, 1], [4, 1, -1]) and 0 < scene.near < scene.far
    with pytest.raises(MclnfError, match="no 'test_filenames'"):
        load_scene(str(tmp_path), "test")

    def per_frame(meta):
        for i, frame in enumerate(meta["frames"]):
            frame["split"] = "test" if i == 1 else "train"

    nerfstudio_scene(tmp_path)
    edit(tmp_path, per_frame)
    assert [f.time for f in load_scene(str(tmp_path), "test").frames] == [0.25]
    nerfstudio_scene(tmp_path)
    with pytest.raises(MclnfError, match="no split information"):
        load_scene(str(tmp_path), "val", holdout_every=0)


def test_blender_layout_with_alpha_and_per_frame_intrinsics(tmp_path):
    for split in ("train", "val"):
        frames = []
        for i in range(2):
            write_image(tmp_path / split / f"r_{i}.png", 10, 4, mode="RGBA", value=40)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose(i)})
        meta = {"camera_angle_x": 0.8, "frames": frames}
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
    edit_path = tmp_path / "transforms_val.json"
    meta = json.loads(edit_path.read_text())
    meta["frames"][1].update(fl_x=7.0, cx=4.5)  # per-frame intrinsics override the global ones
    edit_path.write_text(json.dumps(meta))
    train = load_scene(str(tmp_path))
    frame = train.frames[0]
    assert (frame.width, frame.height, frame.cx, frame.cy) == (10, 4, 5.0, 2.0)
    assert frame.fx == pytest.approx(0.5 * 10 / math.tan(0.4)) and frame.fy == frame.fx
    assert (train.near, train.far) == (2.0, 6.0)
    image = load_frame_image(train, frame)
    assert image.shape == (4, 10, 3)
    assert (image[0, 0] == 40).all() and (image[1:] == 255).all()  # transparent -> white
    val = load_scene(str(tmp_path), "val")
    assert (val.frames[1].fx, val.frames[1].cx, val.frames[0].cx) == (7.0, 4.5, 5.0)


def set_nan(meta):
    meta["frames"][3]["transform_matrix"][0][3] = float("nan")


BAD_TRANSFORMS = {
    "no pose": (
        lambda m: m["frames"][1].pop("transform_matrix"),
        r"frame 1 \(images/f1.png\): missing key 'transform_matrix'",
    ),
    "3x4 pose": (
        lambda m: m["frames"][2].update(transform_matrix=[[1, 0, 0, 0]] * 3),
        r"frame 2 .*must be 4x4, got shape \(3, 4\)",
    ),
    "ragged pose": (
        lambda m: m["frames"][0].update(transform_matrix=[[1, 0], [0, 1, 2]]),
        r"frame 0 .*4x4 matrix of numbers",
    ),
    "nan pose": (set_nan, r"frame 3 .*NaN or inf"),
    "no image": (
        lambda m: m["frames"][1].update(file_path="images/nothere.png"),
        r"frame 1 \(images/nothere.png\): image file not found",
    ),
    "no file_path": (
        lambda m: m["frames"][1].pop("file_path"),
        r"frame 1: missing key 'file_path'",
    ),
    "no focal": (lambda m: m.pop("fl_x"), r"frame 0 .*missing key 'fl_x' \(or 'camera_angle_x'\)"),
    "bad time": (
        lambda m: m["frames"][2].update(time="noon"),
        r"frame 2 .*'time' must be a finite",
    ),
    "near only": (lambda m: m.pop("far"), r"'near' and 'far' must be given together"),
    "camera model": (
        lambda m: m["frames"][2].update(camera_model="EQUIRECTANGULAR"),
        r"frame 2 .*unknown camera_model 'EQUIRECTANGULAR'",
    ),
    "k4 on a perspective lens": (lambda m: m.update(k4=0.1), r"frame 0 .*'k4' is not a coeff"),
    "folding lens": (
        lambda m: m["frames"][1].update(k1=-2.0),
        r"frame 1 .*lens OPENCV k1=-2 is not invertible",
    ),
    "image size": (lambda m: m["frames"][3].update(w=9), r"frame 3 .*is 8x6, transforms say .*9x6"),
    "bad box": (lambda m: m.update(scene_box=[[0, 0, 0], [1, 1]]), r"'scene_box' must be"),
    "flat box": (lambda m: m.update(scene_box=[[0, 0, 0], [1, 1, 0]]), r"'scene_box' must be"),
    "zero aabb": (lambda m: m.update(aabb_scale=0), r"'aabb_scale' and 'scale' must be > 0"),
}


@pytest.mark.parametrize(("change", "message"), BAD_TRANSFORMS.values(), ids=BAD_TRANSFORMS.keys())
def test_bad_transforms_are_one_line_errors(tmp_path, change, message):
    nerfstudio_scene(tmp_path)
    edit(tmp_path, change)
    with pytest.raises(MclnfError, match=message) as caught:
        load_scene(str(tmp_path), "all")
    text = str(caught.value)
    assert "\n" not in text and "transforms.json" in text


def test_missing_or_invalid_transforms(tmp_path):
    with pytest.raises(MclnfError, match="no transforms.json, transforms_train.json or COLMAP"):
        load_scene(str(tmp_path))
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(MclnfError, match="transforms.json: not valid JSON"):
        load_scene(str(tmp_path))


def test_bad_images_are_one_line_errors(tmp_path):
    scene = load_scene(nerfstudio_scene(tmp_path), "all")
    write_image(tmp_path / "images/f1.png", 9, 6)
    with pytest.raises(MclnfError, match=r"frame 1 .*f1.png\): image is 9x6, transforms say"):
        load_frame_image(scene, scene.frames[1])
    (tmp_path / "images/f2.png").write_bytes(b"not a png at all")
    with pytest.raises(MclnfError, match=r"frame 2 .*cannot decode image") as caught:
        load_frame_image(scene, scene.frames[2])
    assert "\n" not in str(caught.value)
    os.remove(tmp_path / "images/f3.png")
    with pytest.raises(MclnfError, match=r"frame 3 .*image file not found"):
        load_frame_image(scene, scene.frames[3])


def test_within_a_run_each_split_is_parsed_and_each_header_read_once(tmp_path, monkeypatch):
    from mclnf_dist.scenes import scene as scene_module
    from mclnf_dist.scenes import scene_cameras
    from mclnf_dist.scenes.scene import check_scene, reading_once

    root = nerfstudio_scene(tmp_path, frames=6)
    parses, headers = [], []
    parse, header = scene_module.read_transforms, scene_cameras.Image.open
    monkeypatch.setattr(scene_module, "read_transforms", lambda p: parses.append(p) or parse(p))
    monkeypatch.setattr(scene_cameras.Image, "open", lambda p: headers.append(p) or header(p))
    with reading_once():
        check_scene(root, ("train", "test"), holdout_every=3)  # all, train, test
        first = load_scene(root, "train", holdout_every=3)
        first.frames.reverse()  # a caller's own copy: the memo keeps its order
        again = load_scene(root, "train", holdout_every=3)
        assert [f.file_path for f in again.frames] == sorted(f.file_path for f in again.frames)
        assert len(parses) == 3 and len(headers) == 6  # one header per image, whatever the split
        load_scene(root, "train", holdout_every=2)  # other options: parsed again
        assert len(parses) == 4
    write_image(tmp_path / "images/f1.png", 5, 5)  # outside a run the files are read afresh
    with pytest.raises(MclnfError, match=r"f1\.png"):
        load_scene(root, "train", holdout_every=3)
    assert len(parses) == 5
