"""Posed-image scenes in the ``transforms.json`` convention (NeRF/Blender, nerfstudio, MatrixCity).

Accepted layouts of a scene folder ``root`` (``root`` may also be the JSON file itself):

- ``transforms_{split}.json`` (Blender): every frame of the file is in ``split``.
- ``transforms.json`` with a ``"split"`` key per frame, or nerfstudio-style ``"train_filenames"``,
  ``"val_filenames"``, ``"test_filenames"`` lists; without any split information every frame is
  in ``train`` (and ``all``). ``split="all"`` always takes every frame.

Intrinsics come from the frame or, if absent there, the top level: ``fl_x``/``fl_y``/``cx``/``cy``/
``w``/``h`` (nerfstudio, MatrixCity) or Blender's ``camera_angle_x`` (``fx = 0.5 w /
tan(0.5 camera_angle_x)``, ``fy = fx`` unless ``camera_angle_y``); a missing ``w``/``h`` is read
from the image header, a missing ``cx``/``cy`` is the image centre. Poses are camera-to-world
4x4 ``transform_matrix`` in the convention of :mod:`mclnf_dist.nerf.rays`, used as given (no
re-centring). Optional per frame: ``time`` (default 0). Optional top level: ``near``/``far``
(distances along unit rays), ``scene_box`` ([[min x, y, z], [max x, y, z]]), ``background``
([r, g, b] in [0, 1], what transparent pixels are composited on; default white as in Blender).
Without ``near``/``far`` they are derived from ``scene_box``, or are Blender's 2 and 6 for
``camera_angle_x`` scenes.

Every problem with the files is a one-line :class:`~mclnf_dist.errors.MclnfError` naming the file,
the frame index and ``file_path``, and what was expected.
"""

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from mclnf_dist.errors import MclnfError

IMAGE_SUFFIXES = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG")
"""Tried in order when a ``file_path`` has no extension (Blender writes ``./train/r_0``)."""
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
BLENDER_NEAR_FAR = (2.0, 6.0)


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


@dataclass
class Scene:
    """The frames of one split of a scene, with the depth range its rays should be sampled in."""

    root: str
    split: str
    frames: list[Frame]
    near: float
    far: float
    scene_box: np.ndarray | None = None
    """(2, 3) min and max corners of the region holding all geometry, or None."""
    background: np.ndarray = field(default_factory=lambda: np.ones(3))
    """(3,) colour in [0, 1] behind the scene (transparent pixels are composited on it)."""
    transforms_file: str = ""
    """The JSON file the scene was read from."""

    def camera_centers(self) -> np.ndarray:
        """(N, 3) camera positions (for the block partition)."""
        return np.array([f.c2w[:3, 3] for f in self.frames]).reshape(-1, 3)


def find_transforms(root: str, split: str) -> tuple[str, bool]:
    """The transforms file of ``root`` and whether it is a per-split (Blender) file."""
    if os.path.isfile(root):
        return root, os.path.basename(root) == f"transforms_{split}.json"
    per_split = os.path.join(root, f"transforms_{split}.json")
    if os.path.isfile(per_split):
        return per_split, True
    single = os.path.join(root, "transforms.json")
    if os.path.isfile(single):
        return single, False
    raise MclnfError(f"no transforms.json or transforms_{split}.json in scene folder {root}")


def load_scene(root: str, split: str = "train") -> Scene:
    """Read the frames of ``split`` (``train``, ``val``, ``test`` or ``all``) of a scene folder."""
    path, per_split = find_transforms(root, split)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except json.JSONDecodeError as error:
        raise MclnfError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise MclnfError(f"{path}: expected an object with a 'frames' list")
    chosen = select_split(path, meta, split, per_split)
    frames = [parse_frame(path, folder, meta, index, entry) for index, entry in chosen]
    if not frames:
        raise MclnfError(f"{path}: no frames in split '{split}'")
    scene_box = parse_box(path, meta)
    near, far = parse_near_far(path, meta, frames, scene_box)
    background = np.ones(3)
    if "background" in meta:
        background = np.asarray(
            [number(path, "background", v) for v in as_list(path, "background", meta, 3)]
        )
    return Scene(folder, split, frames, near, far, scene_box, background, path)


def select_split(path: str, meta: dict, split: str, per_split: bool) -> list[tuple[int, dict]]:
    """``(index in the file, frame entry)`` of the frames that belong to ``split``."""
    entries = list(enumerate(meta["frames"]))
    for index, entry in entries:
        if not isinstance(entry, dict):
            raise MclnfError(f"{path}: frame {index} is not an object")
    if per_split or split == "all":
        return entries
    if any("split" in entry for _, entry in entries):
        for index, entry in entries:
            if "split" not in entry:
                raise MclnfError(f"{path}: frame {index} has no 'split' key (other frames do)")
        return [(i, e) for i, e in entries if e["split"] == split]
    listed = [key for key in meta if key.endswith("_filenames")]
    if listed:
        key = f"{split}_filenames"
        if key not in meta:
            raise MclnfError(f"{path}: no '{key}' list (has {', '.join(sorted(listed))})")
        wanted = {os.path.normpath(str(name)) for name in meta[key]}
        found = [(i, e) for i, e in entries if os.path.normpath(str(e.get("file_path"))) in wanted]
        if len(found) != len(wanted):
            have = {os.path.normpath(str(e.get("file_path"))) for _, e in entries}
            missing = sorted(wanted - have)[0]
            raise MclnfError(f"{path}: '{key}' names {missing}, which is no frame's file_path")
        return found
    if split == "train":
        return entries
    raise MclnfError(
        f"{path}: no split information (per-frame 'split' or '{split}_filenames'), "
        f"so there is no '{split}' split; use split 'train' or 'all'"
    )


def number(where: str, key: str, value) -> float:
    """``value`` as a finite float, or a one-line error naming ``where`` and ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MclnfError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def as_list(where: str, key: str, meta: dict, length: int) -> list:
    value = meta[key]
    if not isinstance(value, list) or len(value) != length:
        raise MclnfError(f"{where}: '{key}' must be a list of {length} numbers, got {value!r}")
    return value


def parse_frame(path: str, folder: str, meta: dict, index: int, entry: dict) -> Frame:
    """One frame entry -> :class:`Frame` (intrinsics from the frame, else the top level)."""
    if "file_path" not in entry:
        raise MclnfError(f"{path}: frame {index}: missing key 'file_path'")
    where = f"{path}: frame {index} ({entry['file_path']})"
    if "transform_matrix" not in entry:
        raise MclnfError(f"{where}: missing key 'transform_matrix'")
    c2w = parse_pose(where, entry["transform_matrix"])

    def get(key: str):
        return entry.get(key, meta.get(key))

    for key in DISTORTION_KEYS:
        if get(key) not in (None, 0, 0.0):
            raise MclnfError(f"{where}: lens distortion '{key}' is not supported; undistort first")
    image_path = find_image(where, folder, str(entry["file_path"]))
    width, height = get("w"), get("h")
    if width is None or height is None:
        width, height = image_size(where, image_path)
    width, height = int(number(where, "w", width)), int(number(where, "h", height))
    if get("fl_x") is not None:
        fx = number(where, "fl_x", get("fl_x"))
    elif get("camera_angle_x") is not None:
        fx = 0.5 * width / math.tan(0.5 * number(where, "camera_angle_x", get("camera_angle_x")))
    else:
        raise MclnfError(f"{where}: missing key 'fl_x' (or 'camera_angle_x')")
    if get("fl_y") is not None:
        fy = number(where, "fl_y", get("fl_y"))
    elif get("camera_angle_y") is not None:
        fy = 0.5 * height / math.tan(0.5 * number(where, "camera_angle_y", get("camera_angle_y")))
    else:
        fy = fx
    cx = number(where, "cx", get("cx")) if get("cx") is not None else width / 2
    cy = number(where, "cy", get("cy")) if get("cy") is not None else height / 2
    time = number(where, "time", entry["time"]) if "time" in entry else 0.0
    return Frame(image_path, c2w, fx, fy, cx, cy, width, height, time)


def parse_pose(where: str, value) -> np.ndarray:
    """A (4, 4) finite float64 matrix, or a one-line error."""
    try:
        c2w = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MclnfError(f"{where}: 'transform_matrix' must be a 4x4 matrix of numbers") from None
    if c2w.shape != (4, 4):
        raise MclnfError(f"{where}: 'transform_matrix' must be 4x4, got shape {c2w.shape}")
    if not np.isfinite(c2w).all():
        raise MclnfError(f"{where}: 'transform_matrix' contains NaN or inf")
    return c2w


def find_image(where: str, folder: str, file_path: str) -> str:
    """The image file of ``file_path`` (relative to the scene folder; extension optional)."""
    base = os.path.normpath(os.path.join(folder, file_path))
    for suffix in IMAGE_SUFFIXES:
        if os.path.isfile(base + suffix):
            return base + suffix
    raise MclnfError(f"{where}: image file not found ({base})")


def image_size(where: str, image_path: str) -> tuple[int, int]:
    """(width, height) from the image header (does not decode the pixels)."""
    try:
        with Image.open(image_path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise MclnfError(f"{where}: cannot read image {image_path} ({error})") from None


def parse_box(path: str, meta: dict) -> np.ndarray | None:
    """The (2, 3) ``scene_box`` if present (min corner strictly below max corner)."""
    if "scene_box" not in meta:
        return None
    try:
        box = np.asarray(meta["scene_box"], dtype=np.float64)
    except (TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (2, 3) or not np.isfinite(box).all() or not (box[0] < box[1]).all():
        raise MclnfError(f"{path}: 'scene_box' must be [[min x, y, z], [max x, y, z]] (min < max)")
    return box


def parse_near_far(
    path: str, meta: dict, frames: list[Frame], scene_box: np.ndarray | None
) -> tuple[float, float]:
    """``near``/``far`` from the file, else from the scene box, else Blender's defaults."""
    if "near" in meta or "far" in meta:
        if "near" not in meta or "far" not in meta:
            raise MclnfError(f"{path}: 'near' and 'far' must be given together")
        near, far = number(path, "near", meta["near"]), number(path, "far", meta["far"])
        if not 0 <= near < far:
            raise MclnfError(f"{path}: expected 0 <= near < far, got near={near}, far={far}")
        return near, far
    if scene_box is not None:
        centres = np.array([f.c2w[:3, 3] for f in frames])  # (N, 3)
        corners = np.array(
            [[x, y, z] for x in scene_box[:, 0] for y in scene_box[:, 1] for z in scene_box[:, 2]]
        )  # (8, 3)
        far = float(np.linalg.norm(centres[:, None] - corners[None], axis=-1).max())
        return 1e-3 * far, far
    if "camera_angle_x" in meta:
        return BLENDER_NEAR_FAR
    raise MclnfError(
        f"{path}: no 'near'/'far' (nor a 'scene_box' to derive them from); "
        'add e.g. "near": 0.1, "far": 100 in scene units'
    )


def load_frame_image(scene: Scene, frame: Frame) -> np.ndarray:
    """The frame's pixels as uint8 (H, W, 3); an alpha channel is composited on the background."""
    index = next((i for i, f in enumerate(scene.frames) if f is frame), None)
    where = f"{scene.transforms_file}: frame {index} ({frame.file_path})"
    try:
        with Image.open(frame.file_path) as image:
            image.load()
            pixels = to_rgb(image, scene.background)
    except FileNotFoundError:
        raise MclnfError(f"{where}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise MclnfError(f"{where}: cannot decode image ({error})") from None
    if pixels.shape[:2] != (frame.height, frame.width):
        raise MclnfError(
            f"{where}: image is {pixels.shape[1]}x{pixels.shape[0]}, "
            f"transforms say w x h = {frame.width}x{frame.height}"
        )
    return pixels


def to_rgb(image: Image.Image, background: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from any PIL mode; transparency is composited on ``background`` (3,)."""
    if image.mode in ("I;16", "I;16B", "I"):  # 16-bit grey: keep the top 8 bits
        grey = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255)
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + np.asarray(background, dtype=np.float64) * (1.0 - alpha)
    return (rgb * 255.0).round().clip(0, 255).astype(np.uint8)
