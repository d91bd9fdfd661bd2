"""A frame's ``file_path`` is read from inside the scene folder only: an absolute path or one
climbing out with ``..`` is refused with one line naming the transforms file and frame."""

import json

import numpy as np
import pytest
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.scene import load_scene


def tiny_scene(root, paths: list[str]) -> str:
    """A nerfstudio-style scene whose frames name ``paths`` (an image exists at each)."""
    root.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, path in enumerate(paths):
        target = (root / path) if not path.startswith("/") else None
        image = Image.fromarray(np.full((6, 8, 3), 10 * i, dtype=np.uint8))
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target.resolve())
        pose = np.eye(4)
        pose[0, 3] = i
        frames.append({"file_path": path, "transform_matrix": pose.tolist()})
    meta = {"fl_x": 10.0, "fl_y": 10.0, "cx": 4.0, "cy": 3.0, "w": 8, "h": 6, "near": 0.1,
            "far": 9.0, "frames": frames}  # fmt: skip
    (root / "transforms.json").write_text(json.dumps(meta))
    return str(root)


@pytest.mark.parametrize("bad", ["../outside.png", "images/../../outside.png", "ABS"])
def test_frame_paths_outside_the_scene_are_refused(tmp_path, bad):
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(outside)
    bad = str(outside) if bad == "ABS" else bad
    root = tiny_scene(tmp_path / "scene", ["images/a.png", bad, "images/c.png"])
    with pytest.raises(MclnfError) as caught:
        load_scene(root, "all", holdout_every=0)
    message = str(caught.value)
    assert message.startswith(f"{root}/transforms.json: frame 1 ({bad}): file_path leads outside")
    assert "\n" not in message


def test_paths_inside_the_scene_are_read(tmp_path):
    root = tiny_scene(tmp_path / "scene", ["./images/a.png", "images/sub/../b.png", "c.png"])
    assert len(load_scene(root, "all", holdout_every=0).frames) == 3
