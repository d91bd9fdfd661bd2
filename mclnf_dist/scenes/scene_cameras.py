"""One frame entry of a transforms file -> a :class:`Frame`: pose, intrinsics, lens, image size.

Intrinsics come from the frame or, where it lacks a key, the file's top level (nerfstudio and
instant-ngp per-frame intrinsics override shared ones): ``fl_x``/``fl_y``/``cx``/``cy``/``w``/``h``
or Blender's ``camera_angle_x``/``camera_angle_y``. The image's header is read here (not its
pixels), so a missing image or one of the wrong size stops the load before any work.

Lens: ``camera_model`` is one of :data:`CAMERA_MODELS` (nerfstudio / COLMAP names); instant-ngp's
``is_fisheye: true`` means ``OPENCV_FISHEYE``. Perspective models take ``k1 k2 k3 p1 p2``, the
fisheye ``k1..k4``; the lens is inverted exactly when rays are built
(:mod:`mclnf_dist.cameras.lens`).

Downscale ``N``: the image is block-averaged over ``N x N`` pixels (a box filter: each new pixel is
the mean of the old pixels it covers), the last ``w mod N`` columns and ``h mod N`` rows dropped.
With pixel centres at ``+0.5`` a new pixel ``u'`` covers old ``[N u', N u' + N)``, so continuous
image coordinates simply divide by ``N``: ``fx/N, fy/N, cx/N, cy/N`` exactly, ``w//N, h//N``.
Distortion coefficients act on normalised coordinates and do not change.
"""

import math
import os
from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError

from mclnf_dist.cameras.frame import Frame
from mclnf_dist.cameras.lens import Distortion, check_invertible
from mclnf_dist.errors import MclnfError

IMAGE_SUFFIXES = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG")
"""Tried in order when a ``file_path`` has no extension (Blender writes ``./train/r_0``)."""
PERSPECTIVE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
CAMERA_MODELS = (*PERSPECTIVE_MODELS, "OPENCV_FISHEYE")


def number(where: str, key: str, value) -> float:
    """``value`` as a finite float, or a one-line error naming ``where`` and ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MclnfError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def frame_pose(path: str, index: int, entry: dict) -> np.ndarray:
    """The (4, 4) pose of a frame entry, with one-line errors naming the file and frame."""
    if "file_path" not in entry:
        raise MclnfError(f"{path}: frame {index}: missing key 'file_path'")
    where = f"{path}: frame {index} ({entry['file_path']})"
    check_inside_scene(where, str(entry["file_path"]))
    if "transform_matrix" not in entry:
        raise MclnfError(f"{where}: missing key 'transform_matrix'")
    return parse_pose(where, entry["transform_matrix"])


def check_inside_scene(where: str, file_path: str) -> None:
    """A frame's ``file_path`` names a file inside the scene folder: relative, and not climbing
    out of it with ``..`` (judged on the path as written; a link the scene's owner placed inside
    the folder is followed)."""
    parts = os.path.normpath(file_path).replace("\\", "/").split("/")
    if os.path.isabs(file_path) or file_path.startswith("~") or parts[0] == "..":
        raise MclnfError(
            f"{where}: file_path leads outside the scene folder (expected a path relative to "
            "the folder of the transforms file, without '..' above it)"
        )


def parse_frame(
    path: str, folder: str, meta: dict, index: int, entry: dict, downscale: int = 1
) -> Frame:
    """One frame entry -> :class:`Frame` (intrinsics from the frame, else the top level)."""
    c2w = frame_pose(path, index, entry)
    where = f"{path}: frame {index} ({entry['file_path']})"

    def get(key: str):
        return entry.get(key, meta.get(key))

    width, height = get("w"), get("h")
    if get("cameras_only") is True:  # a camera path (``mclnf view``'s): no images to read
        if width is None or height is None:
            raise MclnfError(f"{where}: a cameras_only file needs 'w' and 'h'")
        image_path = ""
        file_width, file_height = int(number(where, "w", width)), int(number(where, "h", height))
    else:
        image_path = find_image(where, folder, str(entry["file_path"]))
        file_width, file_height = image_size(where, image_path)
    width = file_width if width is None else int(number(where, "w", width))
    height = file_height if height is None else int(number(where, "h", height))
    if (file_width, file_height) != (width, height):
        raise MclnfError(
            f"{where}: image {image_path} is {file_width}x{file_height}, "
            f"transforms say w x h = {width}x{height}"
        )
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
    if fx <= 0 or fy <= 0:
        raise MclnfError(f"{where}: focal lengths must be positive, got fl_x={fx}, fl_y={fy}")
    time = number(where, "time", entry["time"]) if "time" in entry else 0.0
    if downscale > min(width, height):
        raise MclnfError(f"{where}: downscale {downscale} exceeds the image size {width}x{height}")
    n = downscale
    frame = Frame(image_path, c2w, fx / n, fy / n, cx / n, cy / n, width // n, height // n, time)
    frame.distortion, frame.downscale, frame.where = parse_lens(where, get), n, where
    if frame.distortion is not None:
        intrinsics = (frame.fx, frame.fy, frame.cx, frame.cy, frame.width, frame.height)
        problem = lens_problem(frame.distortion, *intrinsics)
        if problem:
            raise MclnfError(
                f"{where}: lens {frame.distortion.describe()} is not invertible: {problem}"
            )
    return frame


def view_cone(path: str, folder: str, meta: dict, entry: dict, sizes: dict) -> np.ndarray | None:
    """(4,) tangents of a frame's image edges seen from its camera (left, right, bottom, top:
    ``x / depth`` from ``-left`` to ``right``, ``y / depth`` from ``-bottom`` to ``top``), from the
    keys alone (no error: None when they do not say); lens distortion is ignored.

    Where the size is needed and the file gives no ``w``/``h`` (Blender), it is read from the
    header of the first image of the file found (``sizes``: a cache, transforms file -> size).
    """

    def get(key: str):
        return entry.get(key, meta.get(key))

    def size() -> tuple[float, float] | None:
        if get("w") is not None and get("h") is not None:
            return number(path, "w", get("w")), number(path, "h", get("h"))
        if path not in sizes:
            sizes[path] = None
            for other in meta["frames"]:
                if has_image(folder, str(other.get("file_path", ""))):
                    found = find_image(path, folder, str(other["file_path"]))
                    sizes[path] = image_size(path, found)
                    break
        return sizes[path]

    try:
        if get("fl_x") is None:
            half_x = math.tan(0.5 * number(path, "camera_angle_x", get("camera_angle_x")))
            if get("camera_angle_y") is not None:
                half_y = math.tan(0.5 * number(path, "camera_angle_y", get("camera_angle_y")))
            else:
                width, height = size() or (1.0, 1.0)  # unknown: square
                half_y = half_x * height / width
            cone = np.array([half_x, half_x, half_y, half_y])
        else:
            width, height = size()
            fx = number(path, "fl_x", get("fl_x"))
            fy = number(path, "fl_y", get("fl_y")) if get("fl_y") is not None else fx
            cx = number(path, "cx", get("cx")) if get("cx") is not None else width / 2
            cy = number(path, "cy", get("cy")) if get("cy") is not None else height / 2
            cone = np.array([cx / fx, (width - cx) / fx, (height - cy) / fy, cy / fy])
    except (MclnfError, TypeError, ZeroDivisionError):
        return None
    return cone if np.isfinite(cone).all() and (cone > 0).all() else None


@lru_cache(maxsize=256)
def lens_problem(lens: Distortion, *intrinsics) -> str | None:
    """:func:`check_invertible`, once per distinct camera (frames usually share one)."""
    return check_invertible(lens, *intrinsics)


def parse_lens(where: str, get) -> Distortion | None:
    """The frame's lens model and coefficients; None when it has no distortion."""
    model = get("camera_model")
    if get("is_fisheye") is True and model is None:
        model = "OPENCV_FISHEYE"
    model = "OPENCV" if model is None else model
    if model not in CAMERA_MODELS:
        raise MclnfError(
            f"{where}: unknown camera_model {model!r} (supported: {', '.join(CAMERA_MODELS)})"
        )
    names = ("k1", "k2", "k3", "k4", "p1", "p2")
    values = {k: number(where, k, get(k)) if get(k) is not None else 0.0 for k in names}
    fisheye = model == "OPENCV_FISHEYE"
    unused = ("p1", "p2") if fisheye else ("k4",)
    for key in unused:
        if values[key]:
            raise MclnfError(
                f"{where}: '{key}' is not a coefficient of camera_model {model} "
                "(perspective: k1 k2 k3 p1 p2; OPENCV_FISHEYE: k1 k2 k3 k4)"
            )
    if not any(values.values()):
        return None
    return Distortion("OPENCV_FISHEYE" if fisheye else "OPENCV", **values)


def parse_pose(where: str, value) -> np.ndarray:
    """A (4, 4) finite float64 matrix with an invertible rotation part, or a one-line error."""
    try:
        c2w = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MclnfError(f"{where}: 'transform_matrix' must be a 4x4 matrix of numbers") from None
    if c2w.shape != (4, 4):
        raise MclnfError(f"{where}: 'transform_matrix' must be 4x4, got shape {c2w.shape}")
    if not np.isfinite(c2w).all():
        raise MclnfError(f"{where}: 'transform_matrix' contains NaN or inf")
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-9:
        raise MclnfError(f"{where}: 'transform_matrix' has a singular rotation part")
    return c2w


def has_image(folder: str, file_path: str) -> bool:
    """Whether the image of ``file_path`` exists (any accepted extension)."""
    base = os.path.normpath(os.path.join(folder, file_path))
    return any(os.path.isfile(base + suffix) for suffix in IMAGE_SUFFIXES)


def find_image(where: str, folder: str, file_path: str) -> str:
    """The image file of ``file_path`` (relative to the scene folder; extension optional)."""
    base = os.path.normpath(os.path.join(folder, file_path))
    for suffix in IMAGE_SUFFIXES:
        if os.path.isfile(base + suffix):
            return base + suffix
    raise MclnfError(f"{where}: image file not found ({base})")


READ_ONCE: list[dict] = []
"""The memo of the innermost :func:`~mclnf_dist.scenes.scene.reading_once` block (empty outside
one): parsed splits and image headers, keyed by what they were read with."""


def image_size(where: str, image_path: str) -> tuple[int, int]:
    """(width, height) from the image header (does not decode the pixels; read once per
    :func:`~mclnf_dist.scenes.scene.reading_once` block)."""
    key = ("header", os.path.abspath(image_path))
    if READ_ONCE and key in READ_ONCE[-1]:
        return READ_ONCE[-1][key]
    try:
        with Image.open(image_path) as image:
            size = image.size
    except (UnidentifiedImageError, OSError) as error:
        raise MclnfError(f"{where}: cannot read image {image_path} ({error})") from None
    if READ_ONCE:
        READ_ONCE[-1][key] = size
    return size


def block_average(pixels: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H//f, W//f, 3) uint8, each pixel the rounded mean of an f x f block."""
    if factor == 1:
        return pixels
    height, width = pixels.shape[0] // factor, pixels.shape[1] // factor
    blocks = pixels[: height * factor, : width * factor].reshape(height, factor, width, factor, 3)
    return blocks.mean(axis=(1, 3), dtype=np.float64).round().astype(np.uint8)
