"""Fixtures of the data tests: a tiny posed-image scene written on the fly (transforms.json and
random PNGs, z up).

Six 6x5 cameras 3 units above a 2x3 grid on the ground plane, looking down (identity rotation:
the camera's -z is the world's -z), two of them tilted so their rays cross several blocks.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WIDTH, HEIGHT = 6, 5


def tilted(angle: float) -> np.ndarray:
    """(3, 3) rotation about the world x axis by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def make_tiny_scene(root: Path, seed: int = 0, times: bool = False) -> tuple[str, list[np.ndarray]]:
    """Write the scene under ``root``; returns (scene folder, the (H, W, 3) uint8 images)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    frames, images = [], []
    for index, (x, y) in enumerate([(0, 0), (2, 0), (4, 0), (0, 2), (2, 2), (4, 2)]):
        pose = np.eye(4)
        pose[:3, 3] = [x, y, 3.0]
        if index in (1, 4):
            pose[:3, :3] = tilted(0.6 if index == 1 else -0.6)
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"frame_{index:02d}.png")
        images.append(image)
        frame = {"file_path": f"frame_{index:02d}.png", "transform_matrix": pose.tolist()}
        if times:
            frame["time"] = index / 5
        frames.append(frame)
    meta = {
        "fl_x": 5.0, "fl_y": 5.0, "cx": WIDTH / 2, "cy": HEIGHT / 2, "w": WIDTH, "h": HEIGHT,
        "near": 0.1, "far": 10.0, "scene_box": [[-1, -1, 0], [5, 3, 2]], "frames": frames,
    }  # fmt: skip
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return str(root), images


@pytest.fixture(scope="session")
def tiny_scene_factory():
    """``make_tiny_scene(root, seed=0, times=False) -> (scene folder, images)``."""
    return make_tiny_scene
