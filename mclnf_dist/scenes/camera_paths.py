"""Camera paths to render a scene along: its held-out cameras, an orbit, a fly-over, a file.

All paths take the intrinsics of the scene's first frame (scaled by ``scale``) and are z-up, as
the scene loader's worlds are. ``look_at`` cameras look down their -z axis, +y up (OpenGL, as in
transforms.json).
"""

import dataclasses

import numpy as np

from mclnf_dist.scenes.scene import Frame, Scene


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) camera-to-world of a camera at ``eye`` looking at ``target``."""
    forward = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: any right will do
        right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(right, forward), -forward, eye
    return c2w


def scaled(frame: Frame, scale: float) -> Frame:
    """The same camera at ``scale`` times the resolution (intrinsics scaled with it)."""
    if scale == 1.0:
        return frame
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    sx, sy = width / frame.width, height / frame.height
    return dataclasses.replace(
        frame,
        width=width,
        height=height,
        fx=frame.fx * sx,
        fy=frame.fy * sy,
        cx=frame.cx * sx,
        cy=frame.cy * sy,
    )


def scene_centre_and_extent(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (3,) size of the scene box (or of the cameras when the scene has no box)."""
    if scene.scene_box is not None:
        low, high = np.asarray(scene.scene_box, dtype=np.float64)
    else:
        centres = scene.camera_centers()
        low, high = centres.min(0), centres.max(0)
    return 0.5 * (low + high), high - low


def orbit_frames(scene: Scene, count: int) -> list[Frame]:
    """``count`` cameras on a circle around the scene's centre, at its cameras' mean distance and
    height, all looking at the centre."""
    centre, _ = scene_centre_and_extent(scene)
    cameras = scene.camera_centers()
    offsets = cameras - centre
    radius = float(np.linalg.norm(offsets[:, :2], axis=1).mean())
    height = float(offsets[:, 2].mean())
    angles = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    first = dataclasses.replace(scene.frames[0], file_path="")
    return [
        dataclasses.replace(
            first,
            c2w=look_at(centre + [radius * np.cos(a), radius * np.sin(a), height], centre),
        )
        for a in angles
    ]


def flyover_frames(scene: Scene, count: int) -> list[Frame]:
    """``count`` cameras flying along the scene's x axis over its middle, looking ahead and 45
    degrees down, at the mean height of the upper half of the scene's cameras (its aerial views)."""
    first = dataclasses.replace(scene.frames[0], file_path="")
    heights = np.sort(scene.camera_centers()[:, 2])
    height = float(heights[len(heights) // 2 :].mean())
    centre, extent = scene_centre_and_extent(scene)
    low, high = centre - extent / 2, centre + extent / 2
    back = height  # start one height before the box: the first view looks at its edge
    forward = np.array([np.cos(np.pi / 4), 0.0, -np.sin(np.pi / 4)])
    eyes = np.linspace(
        [low[0] - back, centre[1], height], [high[0] - back, centre[1], height], count
    )
    return [dataclasses.replace(first, c2w=look_at(eye, eye + forward)) for eye in eyes]
