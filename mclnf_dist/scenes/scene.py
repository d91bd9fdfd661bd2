"""Posed-image scenes in the ``transforms.json`` family (Blender, nerfstudio, instant-ngp, ...).

Accepted layouts of a scene folder ``root`` (``root`` may also be the JSON file itself):

- Blender: ``transforms_{train,val,test}.json`` only; every frame of a file is in its split, and
  split ``all`` is the union of the files (train, val, test, then any other, in that order).
- ``transforms.json`` (nerfstudio, instant-ngp, MatrixCity) with a ``"split"`` key per frame, or
  nerfstudio-style ``"train_filenames"``/``"val_filenames"``/``"test_filenames"`` lists. Without
  any split information every ``holdout_every``-th frame (0, 8, 16, ... by default, as in the
  mip-NeRF 360 protocol) is held out as ``test`` (and ``val``), the others are ``train``;
  ``holdout_every=0`` keeps every frame in ``train``. ``split="all"`` always takes every frame.
- A COLMAP sparse model (``sparse/0``, ``sparse`` or ``colmap/sparse/0``, ``.bin`` or ``.txt``)
  beside ``images/``, when the folder has no transforms file: read as one
  (:mod:`mclnf_dist.scenes.colmap_model`), split by ``holdout_every``.

Frames (intrinsics, lens, downscaling): :mod:`mclnf_dist.scenes.scene_cameras`. Box and near/far,
derived when absent: :mod:`mclnf_dist.scenes.scene_bounds`. Poses are camera-to-world 4x4
``transform_matrix`` in the convention of :mod:`mclnf_dist.nerf.rays`, used as given (no
re-centring). Optional per frame: ``time`` (default 0). Optional top level: ``background``
([r, g, b] in [0, 1], what transparent pixels are composited on; default white as in Blender).

Every problem with the files is a one-line :class:`~mclnf_dist.errors.MclnfError` naming the file,
the frame index and ``file_path``, and what was expected; all of them (images' headers included)
are found when the scene is loaded, before any work.
"""

import contextlib
import dataclasses
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mclnf_dist.config import NonNegativeInt, PositiveInt
from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.colmap_model import (
    MODEL_DIRS,
    model_dir,
    scene_root_of,
    transforms_from_model,
)
from mclnf_dist.scenes.scene_bounds import scene_bounds
from mclnf_dist.scenes.scene_cameras import (
    READ_ONCE,
    Frame,
    block_average,
    frame_pose,
    has_image,
    number,
    parse_frame,
    view_cone,
)

__all__ = [
    "Frame",
    "Scene",
    "check_scene",
    "is_cut_out",
    "load_frame_image",
    "load_scene",
    "reading_once",
]

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class Scene:
    """The frames of one split of a scene, with the depth range its rays should be sampled in."""

    root: str
    split: str
    frames: list[Frame]
    near: float
    far: float
    scene_box: np.ndarray | None = None
    """(2, 3) min and max corners of the region holding all geometry."""
    background: np.ndarray = field(default_factory=lambda: np.ones(3))
    """(3,) colour in [0, 1] behind the scene (transparent pixels are composited on it)."""
    transforms_file: str = ""
    """The JSON file the scene was read from (the first, for a union of per-split files)."""
    transforms_files: list[str] = field(default_factory=list)
    """Every JSON file read (Blender's split ``all``: one per split)."""
    box_note: str = ""
    """One line saying how the box was derived when the file gave none ("" when it did)."""

    def camera_centers(self) -> np.ndarray:
        """(N, 3) camera positions (for the block partition)."""
        return np.array([f.c2w[:3, 3] for f in self.frames]).reshape(-1, 3)


def find_transforms(root: str, split: str) -> list[tuple[str, bool]]:
    """``(file, is a per-split file)`` for every transforms file ``split`` of ``root`` reads."""
    if os.path.isfile(root):
        return [(root, os.path.basename(root).startswith("transforms_"))]
    rank = {name: i for i, name in enumerate(SPLIT_ORDER)}
    per_split = sorted(
        glob.glob(os.path.join(glob.escape(root), "transforms_*.json")),
        key=lambda p: (rank.get(split_name(p), len(rank)), p),
    )
    single = os.path.join(root, "transforms.json")
    mine = [p for p in per_split if split_name(p) == split]
    if mine:
        return [(mine[0], True)]
    if os.path.isfile(single):
        return [(single, False)]
    if per_split and split == "all":
        return [(p, True) for p in per_split]
    if per_split:
        have = ", ".join(os.path.basename(p) for p in per_split)
        raise MclnfError(f"scene folder {root} has no transforms_{split}.json (has {have})")
    colmap = model_dir(root)
    if colmap is not None:
        return [(colmap, False)]
    raise MclnfError(
        f"no transforms.json, transforms_{split}.json or COLMAP model "
        f"({', '.join(d + '/' for d in MODEL_DIRS)}) in scene folder {root}"
    )


def split_name(path: str) -> str:
    """``train`` for ``.../transforms_train.json``."""
    return os.path.basename(path)[len("transforms_") : -len(".json")]


def scene_folder(path: str) -> str:
    """The folder a frame's ``file_path`` is relative to: the transforms file's, or the scene
    folder holding a COLMAP model."""
    if os.path.isdir(path):
        return scene_root_of(path)
    return os.path.dirname(os.path.abspath(path))


def read_transforms(path: str) -> dict:
    """A transforms file's record, or a COLMAP model folder's as one
    (:func:`~mclnf_dist.scenes.colmap_model.transforms_from_model`)."""
    if os.path.isdir(path):
        return transforms_from_model(path)
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except json.JSONDecodeError as error:
        raise MclnfError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise MclnfError(f"{path}: expected an object with a 'frames' list")
    for index, entry in enumerate(meta["frames"]):
        if not isinstance(entry, dict):
            raise MclnfError(f"{path}: frame {index} is not an object")
    return meta


@dataclass
class SceneReading:
    """How a posed-image scene is read: the base of the city job's data config and of an
    ingest's options, so both take the same flags with the same ranges and meaning."""

    downscale: PositiveInt = 1
    """Images are block-averaged by this factor once, at ingest (intrinsics scaled: fx/N, cx/N)."""
    holdout_every: NonNegativeInt = 8
    """Scenes without splits hold out every n-th view as the test views (0: all are training)."""
    skip_missing_images: bool = False
    """Frames whose image file is missing are left out (else: stop, naming the first)."""


def scene_options(reading: SceneReading, scene_box: Any = None) -> dict[str, Any]:
    """The :func:`load_scene` keyword arguments of ``reading`` (``scene_box``: the field's explicit
    box, or the ingest's)."""
    return {
        "downscale": reading.downscale,
        "holdout_every": reading.holdout_every,
        "scene_box": scene_box,
        "skip_missing_images": reading.skip_missing_images,
    }


@contextlib.contextmanager
def reading_once() -> Iterator[None]:
    """Within this block each split of a scene is parsed once and each image header read once:
    a job checks, partitions, ingests, scores and renders the same scene from many places, and a
    parse opens every image's header. Outside a block every call reads the files afresh (a file
    may have changed), so a job wraps one run in it, not the whole process."""
    READ_ONCE.append({})
    try:
        yield
    finally:
        READ_ONCE.pop()


def load_scene(
    root: str,
    split: str = "train",
    downscale: int = 1,
    holdout_every: int = 8,
    scene_box=None,
    skip_missing_images: bool = False,
) -> Scene:
    """Read the frames of ``split`` (``train``, ``val``, ``test`` or ``all``) of a scene folder.

    Args:
        root: the scene folder, or its transforms file.
        downscale: images are read block-averaged by this factor, intrinsics scaled to match.
        holdout_every: scenes without split information hold out every n-th frame as test.
        scene_box: ((min x, y, z), (max x, y, z)) overriding the file's (or the derived) box.
        skip_missing_images: leave out frames whose image file is missing (noted in
            ``box_note``) instead of stopping with an error naming the first.
    """
    box = None if scene_box is None else tuple(np.asarray(scene_box, dtype=float).ravel())
    key = (
        "scene",
        os.path.abspath(root),
        split,
        downscale,
        holdout_every,
        box,
        skip_missing_images,
    )
    scene = READ_ONCE[-1].get(key) if READ_ONCE else None
    if scene is None:
        scene = parse_scene(root, split, downscale, holdout_every, scene_box, skip_missing_images)
        if READ_ONCE:
            READ_ONCE[-1][key] = scene
    return dataclasses.replace(scene, frames=list(scene.frames))  # callers may reorder frames


def parse_scene(
    root: str,
    split: str,
    downscale: int,
    holdout_every: int,
    scene_box,
    skip_missing_images: bool,
) -> Scene:
    """:func:`load_scene`'s work: the transforms files, every frame and image header."""
    if int(downscale) != downscale or downscale < 1:
        raise MclnfError(f"downscale must be a whole number >= 1, got {downscale}")
    files = find_transforms(root, split)
    metas = {path: read_transforms(path) for path, _ in files}
    # Poses of every split: the box (and near/far) must not depend on the split asked for.
    everything = files
    if files[0][1] and split != "all" and not os.path.isfile(root):
        everything = find_transforms(root, "all")
        metas.update({p: read_transforms(p) for p, _ in everything if p not in metas})
    poses = [
        frame_pose(path, index, entry)
        for path, _ in everything
        for index, entry in enumerate(metas[path]["frames"])
    ]
    sizes: dict = {}
    cones = [
        view_cone(path, scene_folder(path), metas[path], entry, sizes)
        for path, _ in everything
        for entry in metas[path]["frames"]
    ]
    frames, skipped = [], []
    for path, per_split in files:
        meta = metas[path]
        folder = scene_folder(path)
        for index, entry in select_split(path, meta, split, per_split, holdout_every):
            if skip_missing_images and not has_image(folder, str(entry.get("file_path", ""))):
                skipped.append(f"{index} ({entry.get('file_path')})")
                continue
            frames.append(parse_frame(path, folder, meta, index, entry, int(downscale)))
    path, meta = files[0][0], metas[files[0][0]]
    if not frames:
        raise MclnfError(f"{path}: no frames in split '{split}'")
    box, near, far, note = scene_bounds(path, meta, np.stack(poses), scene_box, cones)
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        note = f"{note}; skipped {len(skipped)} frames without images: {shown}".strip("; ")
    background = np.ones(3)
    if "background" in meta:
        value = meta["background"]
        if not isinstance(value, list) or len(value) != 3:
            raise MclnfError(f"{path}: 'background' must be a list of 3 numbers, got {value!r}")
        background = np.asarray([number(path, "background", v) for v in value])
    folder = scene_folder(path)
    return Scene(
        folder, split, frames, near, far, box, background, path, [p for p, _ in files], note
    )


def check_scene(root: str, splits: tuple[str, ...] = ("train", "test"), **options) -> Scene:
    """The whole scene (split ``all``) and each of ``splits``, read and checked before any
    work; raises a one-line :class:`MclnfError` naming the file and frame of the first problem
    (no transforms file, a missing or wrongly sized image, a bad pose or lens, no box to be had,
    an empty split). Returns split ``all``.

    Args:
        options: :func:`load_scene` arguments (``downscale``, ``holdout_every``, ``scene_box``,
            ``skip_missing_images``).
    """
    path = Path(root)
    if not path.is_file() and not (path / "transforms.json").exists():
        if not any(path.glob("transforms_*.json")) and model_dir(root) is None:
            raise MclnfError(
                f"scene {root} has no transforms.json or COLMAP model (expected a posed-image "
                "scene)"
            )
    scene = load_scene(root, "all", **options)
    for split in splits:
        load_scene(root, split, **options)
    return scene


def select_split(
    path: str, meta: dict, split: str, per_split: bool, holdout_every: int = 8
) -> list[tuple[int, dict]]:
    """``(index in the file, frame entry)`` of the frames that belong to ``split``."""
    entries = list(enumerate(meta["frames"]))
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
    if holdout_every > 0 and split in SPLIT_ORDER:
        held = split != "train"
        return [(i, e) for i, e in entries if (i % holdout_every == 0) == held]
    if split == "train":
        return entries
    raise MclnfError(
        f"{path}: no split information (per-frame 'split' or '{split}_filenames'), "
        f"so there is no '{split}' split; use split 'train' or 'all' (or holdout_every > 0)"
    )


def load_frame_image(scene: Scene, frame: Frame) -> np.ndarray:
    """The frame's pixels as uint8 (H, W, 3); an alpha channel is composited on the background,
    then the image is block-averaged by the frame's ``downscale``."""
    index = next((i for i, f in enumerate(scene.frames) if f is frame), None)
    where = frame.where or f"{scene.transforms_file}: frame {index} ({frame.file_path})"
    try:
        with Image.open(frame.file_path) as image:
            image.load()
            pixels = to_rgb(image, scene.background)
    except FileNotFoundError:
        raise MclnfError(f"{where}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise MclnfError(f"{where}: cannot decode image ({error})") from None
    pixels = block_average(pixels, frame.downscale)
    if pixels.shape[:2] != (frame.height, frame.width):
        raise MclnfError(
            f"{where}: image is {pixels.shape[1]}x{pixels.shape[0]}, "
            f"transforms say w x h = {frame.width}x{frame.height}"
        )
    return pixels


def is_cut_out(scene: Scene) -> bool:
    """True when the scene's images are objects cut out on a background: its first frame's image
    has an alpha channel with transparent pixels (Blender's renders). Its rays past the object
    are empty by construction (they show ``background``). One image is decoded."""
    if not scene.frames:
        return False
    frame = scene.frames[0]
    try:
        with Image.open(frame.file_path) as image:
            if not (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
                return False
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
    except (FileNotFoundError, UnidentifiedImageError, OSError, SyntaxError):
        return False  # the image's own check names the problem
    return bool((alpha < 255).any())


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
