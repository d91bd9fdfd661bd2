"""A folder of photos, or a video, to a posed scene with pycolmap: SIFT features, matching,
incremental mapping; the largest model is written as ``sparse/0`` and as the ``transforms.json``
the scene loader reads (the same conversion as a COLMAP model read directly:
:mod:`mclnf_dist.scenes.colmap_model`).

Matching is exhaustive for small sets (every pair; the most robust) and sequential for videos and
large sets (each image with its next ``overlap`` neighbours, plus the quadratic ones, so a capture
that comes back to its start still closes); no vocabulary tree is needed. Every problem found
before the work (no images, an unreadable one, sizes that do not agree with one camera, a video
that cannot be decoded) is one line naming the file.
"""

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from PIL import Image, UnidentifiedImageError

from mclnf_dist.config import NonNegativeInt, PositiveFloat, PositiveInt, Range, UnitFloat
from mclnf_dist.errors import MclnfError
from mclnf_dist.progress import ProgressLog
from mclnf_dist.scenes.colmap_model import transforms_from_model
from mclnf_dist.storage import write_atomic

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
EXHAUSTIVE_UP_TO = 100
"""``matcher: auto`` matches every pair up to this many images, neighbours beyond."""
CameraModel = Literal["OPENCV", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV_FISHEYE"]


@dataclass
class PoseOptions:
    """How photos are posed."""

    max_size: NonNegativeInt = 1600
    """Images are downscaled so that their longer side is at most this (0: kept as they are);
    the scene's images are the downscaled ones."""
    matcher: Literal["auto", "exhaustive", "sequential"] = "auto"
    """``auto``: exhaustive up to 100 images, sequential beyond (and for videos)."""
    max_features: PositiveInt = 8192
    """SIFT features kept per image (fewer: faster matching, fewer points)."""
    overlap: PositiveInt = 10
    """Sequential matching: each image is matched with this many next ones."""
    camera_model: CameraModel = "OPENCV"
    """The lens model fitted (OPENCV: focal lengths, centre, k1 k2 p1 p2, as phones want)."""
    single_camera: bool = True
    """One camera (intrinsics) for every image, as one phone or camera took them; off: one per
    image (photos from several cameras)."""
    min_registered: UnitFloat = 0.5
    """Stop with one line when the largest model holds fewer than this share of the images."""
    threads: Annotated[int, Range(ge=1, special=((-1, "all"),))] = -1
    """CPU threads for COLMAP (-1: all)."""
    seed: NonNegativeInt = 0
    """COLMAP's random seed (the same photos give the same poses)."""


@dataclass
class PosedScene:
    """What posing photos gave: the scene folder and what registered."""

    out: str
    images: int
    registered: list[str]
    unregistered: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    """Per stage: ``prepare``, ``features``, ``matching``, ``mapping``, ``write``."""


def list_photos(folder: str) -> list[Path]:
    """The photos of ``folder`` (``.jpg``, ``.jpeg``, ``.png``, any case), sorted by name."""
    path = Path(folder)
    if not path.is_dir():
        raise MclnfError(f"{folder}: not a folder (expected a folder of photos)")
    photos = sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise MclnfError(f"{folder}: no images (expected .jpg, .jpeg or .png files)")
    return photos


def check_photos(photos: list[Path], single_camera: bool) -> dict[Path, tuple[int, int]]:
    """Every photo's size, read from its header; an unreadable photo, or (one camera) photos of
    different sizes, is one line."""
    sizes = {}
    for photo in photos:
        try:
            with Image.open(photo) as image:
                image.verify()
            with Image.open(photo) as image:
                sizes[photo] = image.size
        except (UnidentifiedImageError, OSError) as error:
            raise MclnfError(f"{photo}: cannot read the image ({error})") from None
    distinct = sorted(set(sizes.values()))
    if single_camera and len(distinct) > 1:
        first = {size: next(p.name for p, s in sizes.items() if s == size) for size in distinct}
        shown = ", ".join(f"{name} is {w}x{h}" for (w, h), name in first.items())
        raise MclnfError(
            f"images differ in size ({shown}): one camera cannot fit them (expected one size, or "
            "--no-single-camera to fit a camera per image)"
        )
    return sizes


def prepare_images(
    photos: list[Path], sizes: dict[Path, tuple[int, int]], images: Path, max_size: int
) -> None:
    """The scene's images: the photos, downscaled so the longer side is at most ``max_size``."""
    images.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        target = images / photo.name
        width, height = sizes[photo]
        scale = max_size / max(width, height) if max_size else 1.0
        if scale >= 1.0:
            shutil.copyfile(photo, target)
            continue
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        with Image.open(photo) as image:
            image.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(target, quality=95)


def poses_from_photos(
    folder: str, out: str, opts: PoseOptions | None = None, log: ProgressLog | None = None
) -> PosedScene:
    """Pose the photos of ``folder``; write ``out/images``, ``out/sparse/0`` (the largest model)
    and ``out/transforms.json``. Too few registered images is one line naming them."""
    import pycolmap

    opts = opts or PoseOptions()
    log = log or ProgressLog("from-photos")
    photos = list_photos(folder)
    sizes = check_photos(photos, opts.single_camera)
    root, seconds = Path(out), {}
    images, work = root / "images", root / "colmap"
    if work.exists():
        shutil.rmtree(work)  # a re-run starts its database over (a half-written one misleads)
    work.mkdir(parents=True)
    started = time.perf_counter()

    def stage(name: str, detail: str) -> None:
        now = time.perf_counter()
        seconds[name] = now - started - sum(seconds.values())
        log.info(f"{name}: {detail} ({seconds[name]:.1f} s)")

    prepare_images(photos, sizes, images, opts.max_size)
    stage("prepare", f"{len(photos)} images in {images}")
    pycolmap.logging.minloglevel = pycolmap.logging.WARNING  # stages report below, not glog
    database = str(work / "database.db")
    threads = opts.threads if opts.threads > 0 else (os.cpu_count() or 1)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    sift = extraction.sift
    sift.max_num_features = opts.max_features
    extraction.sift = sift  # (set back: a binding may hand out a copy)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = opts.camera_model
    mode = pycolmap.CameraMode.SINGLE if opts.single_camera else pycolmap.CameraMode.PER_IMAGE
    pycolmap.extract_features(
        database, str(images), [p.name for p in photos], mode, reader, extraction,
        pycolmap.Device.cpu,
    )  # fmt: skip
    stage("features", f"SIFT on {len(photos)} images")
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    exhaustive = opts.matcher == "exhaustive" or (
        opts.matcher == "auto" and len(photos) <= EXHAUSTIVE_UP_TO
    )
    if exhaustive:
        pycolmap.match_exhaustive(database, matching, device=pycolmap.Device.cpu)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap, pairing.quadratic_overlap = opts.overlap, True
        pycolmap.match_sequential(database, matching, pairing, device=pycolmap.Device.cpu)
    stage("matching", "every pair" if exhaustive else f"sequential, overlap {opts.overlap}")
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads, mapping.random_seed = threads, opts.seed
    models = pycolmap.incremental_mapping(database, str(images), str(work / "sparse"), mapping)
    if not models:
        raise MclnfError(
            f"{folder}: no model: none of the {len(photos)} images could be posed (too little "
            "overlap or texture between them)"
        )
    best = max(models.values(), key=lambda model: model.num_reg_images())
    registered = sorted(best.images[i].name for i in best.reg_image_ids())
    unregistered = sorted(set(p.name for p in photos) - set(registered))
    stage("mapping", f"{len(registered)} of {len(photos)} images registered, {len(models)} models")
    if len(registered) < max(3, opts.min_registered * len(photos)):
        shown = ", ".join(unregistered[:10]) + (", ..." if len(unregistered) > 10 else "")
        raise MclnfError(
            f"{folder}: only {len(registered)} of {len(photos)} images registered (expected at "
            f"least {opts.min_registered:.0%}); not registered: {shown}"
        )
    model = root / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    best.write_binary(str(model))
    meta = transforms_from_model(str(model))
    write_atomic(root / "transforms.json", json.dumps(meta, indent=1))
    stage("write", f"{model} and {root / 'transforms.json'}")
    return PosedScene(str(root), len(photos), registered, unregistered, seconds)


def frames_from_video(video: str, folder: str, fps: PositiveFloat) -> int:
    """Decode ``video`` to JPEG frames in ``folder`` at ``fps`` frames per second (PyAV);
    returns how many. A file that cannot be decoded is one line."""
    import av

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written, next_time = 0, 0.0
    try:
        with av.open(video) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.time is None or frame.time + 1e-9 < next_time:
                    continue
                frame.to_image().save(target / f"frame_{written:05d}.jpg", quality=95)
                written += 1
                next_time += 1.0 / fps
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise MclnfError(f"{video}: cannot decode the video ({error})") from None
    if written == 0:
        raise MclnfError(f"{video}: no frames decoded (expected a video with a video stream)")
    return written
