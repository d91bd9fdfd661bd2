"""A posed image: pose, intrinsics, lens, size and time, as every layer that builds or scores
rays sees it (read from transforms files by :mod:`mclnf_dist.scenes.scene_cameras`)."""

from dataclasses import dataclass

import numpy as np

from mclnf_dist.cameras.lens import Distortion


@dataclass
class Frame:
    """One posed image."""

    file_path: str
    """Path of the image file (scene root joined with the frame's ``file_path``)."""
    c2w: np.ndarray
    """(4, 4) float64 camera-to-world matrix (camera looks down -z, +y up)."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    time: float = 0.0
    """Timestamp or phase in [0, 1] (0 for static scenes)."""
    distortion: Distortion | None = None
    """The lens, inverted when rays are built; None: an ideal pinhole."""
    downscale: int = 1
    """Images are block-averaged by this factor when read (intrinsics above are already scaled)."""
    where: str = ""
    """``transforms file: frame i (file_path)``: how errors name this frame."""


OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
"""Right-multiplied onto a camera rotation, turns COLMAP's and viser's camera axes (+z forward,
y down) into the frames' (-z forward, y up), and back (it is its own inverse)."""
