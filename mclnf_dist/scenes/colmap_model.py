"""COLMAP sparse models read as a scene: ``cameras``, ``images`` and ``points3D`` (``.bin`` or
``.txt``) in ``sparse/0`` (or ``sparse``, or nerfstudio's ``colmap/sparse/0``) beside ``images/``.

The model becomes the same record a ``transforms.json`` holds (one frame per registered image, its
intrinsics and lens per frame, so a model with several cameras or image sizes reads as it is), and
the scene loader takes it from there: one loader, one set of checks. The conversion:

- Pose: COLMAP stores ``cam_from_world`` with the camera looking down +z, y down; the loader wants
  camera-to-world with the camera looking down -z, y up (OpenGL / nerfstudio), so
  ``c2w = inverse(cam_from_world) @ diag(1, -1, -1, 1)``.
- World: COLMAP's world has no up; it is rotated (about the origin, no scaling or re-centring) so
  that the cameras' mean up vector is +z, the ground axes the block grid cuts (``up_axis`` z).
- Lens: COLMAP's ``SIMPLE_PINHOLE``, ``PINHOLE``, ``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV`` and
  ``OPENCV_FISHEYE`` are what :mod:`mclnf_dist.cameras.lens` inverts; any other model is one line.
- Box: the sparse points' extent (the 1st to 99th percentile per axis, so stray points do not
  widen it, grown by 10 % a side) is the scene's ``scene_box``; near/far then follow from it.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np

from mclnf_dist.cameras.frame import OPENCV_TO_OPENGL
from mclnf_dist.errors import MclnfError

MODEL_DIRS = ("sparse/0", "sparse", "colmap/sparse/0")
"""Where a scene folder may hold its COLMAP model, in the order looked at."""
LENS_PARAMS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "OPENCV_FISHEYE": ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4"),
}
"""COLMAP camera models the lens code inverts, with COLMAP's parameter order."""
BOX_PERCENTILES = (1.0, 99.0)
BOX_MARGIN = 0.1


def model_dir(root: str) -> str | None:
    """The COLMAP model folder of a scene folder (one holding ``cameras.bin`` or
    ``cameras.txt``), or None when it has none."""
    for name in MODEL_DIRS:
        folder = os.path.join(root, name)
        if any(os.path.isfile(os.path.join(folder, f"cameras.{ext}")) for ext in ("bin", "txt")):
            return folder
    return None


def scene_root_of(model: str) -> str:
    """The scene folder a model folder found by :func:`model_dir` belongs to."""
    path = Path(os.path.abspath(model))
    for name in MODEL_DIRS:
        depth = len(name.split("/"))
        if path.as_posix().endswith("/" + name):
            return str(path.parents[depth - 1])
    return str(path.parent)


def read_model(model: str) -> Any:
    """The :class:`pycolmap.Reconstruction` in ``model``; a file COLMAP cannot read is one line."""
    import pycolmap

    try:
        return pycolmap.Reconstruction(model)
    except Exception as error:  # pycolmap raises plain RuntimeErrors/ValueErrors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MclnfError(f"{model}: not a readable COLMAP model ({first})") from None


def up_rotation(c2ws: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking the cameras' mean up vector (OpenGL +y of each) to world +z."""
    up = c2ws[:, :3, 1].mean(axis=0)
    norm = np.linalg.norm(up)
    if norm < 1e-8:
        return np.eye(3)
    up = up / norm
    z = np.array([0.0, 0.0, 1.0])
    axis, cos = np.cross(up, z), float(np.dot(up, z))
    sin = float(np.linalg.norm(axis))
    if sin < 1e-12:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * cross + (1 - cos) * cross @ cross


def lens_entry(where: str, camera: Any) -> dict[str, Any]:
    """A frame's intrinsics and lens keys (``fl_x``, ``cx``, ``camera_model``, ``k1``, ...)."""
    model = str(camera.model_name)
    if model not in LENS_PARAMS:
        raise MclnfError(
            f"{where}: COLMAP camera model {model} is not supported (expected one of: "
            f"{', '.join(LENS_PARAMS)})"
        )
    values = dict(zip(LENS_PARAMS[model], (float(v) for v in camera.params), strict=True))
    fx = values.pop("f", None) or values.pop("fx")
    fy = values.pop("fy", fx)
    entry = {"fl_x": fx, "fl_y": fy, "cx": values.pop("cx"), "cy": values.pop("cy")}
    entry |= {"w": int(camera.width), "h": int(camera.height)}
    entry["camera_model"] = "OPENCV_FISHEYE" if model == "OPENCV_FISHEYE" else "OPENCV"
    return entry | values


def transforms_from_model(model: str, image_folder: str = "images") -> dict[str, Any]:
    """The model as a ``transforms.json`` record: frames (registered images, sorted by name) with
    ``file_path`` ``<image_folder>/<name>`` relative to the scene folder, and the points' box."""
    reconstruction = read_model(model)
    images = sorted(reconstruction.images.values(), key=lambda image: image.name)
    images = [image for image in images if image.has_pose]
    if not images:
        raise MclnfError(f"{model}: the COLMAP model has no registered images")
    c2ws = []
    for image in images:
        cam_from_world = np.eye(4)
        cam_from_world[:3] = image.cam_from_world().matrix()
        c2w = np.linalg.inv(cam_from_world)
        c2w[:3, :3] = c2w[:3, :3] @ OPENCV_TO_OPENGL
        c2ws.append(c2w)
    c2ws = np.stack(c2ws)
    world = np.eye(4)
    world[:3, :3] = up_rotation(c2ws)
    frames = []
    for image, c2w in zip(images, c2ws, strict=True):
        where = f"{model}: image {image.name}"
        frame = {"file_path": f"{image_folder}/{image.name}"}
        frame |= lens_entry(where, reconstruction.cameras[image.camera_id])
        frame["transform_matrix"] = (world @ c2w).tolist()
        frames.append(frame)
    meta: dict[str, Any] = {"frames": frames, "colmap_model": os.path.abspath(model)}
    points = np.array([p.xyz for p in reconstruction.points3D.values()], dtype=np.float64)
    if len(points) >= 8:
        points = points @ world[:3, :3].T
        low, high = np.percentile(points, BOX_PERCENTILES, axis=0)
        margin = BOX_MARGIN * np.maximum(high - low, 1e-6)
        meta["scene_box"] = [(low - margin).tolist(), (high + margin).tolist()]
    return meta
