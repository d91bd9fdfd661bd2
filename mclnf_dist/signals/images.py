"""Images as signals: decode, crop to the target aspect, resize, and cut into patches.

Every image of a set is fitted to one size so that the set shares one grid (see
:class:`~mclnf_dist.signals.signal_set.SignalSet`). Cropping to the target aspect before resizing
keeps objects undistorted; LANCZOS resampling (antialiased when shrinking) keeps downscaled photos
free of aliasing that a neural field would otherwise have to learn.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.signals.segments import check_splits, grid_coords, grid_segments
from mclnf_dist.signals.signal_set import SignalSet

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_EXPECTED_FILES = "/".join(IMAGE_EXTENSIONS)
# ITU-R 601-2 luma, the weights PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (other files are ignored)."""
    folder = Path(folder)
    if not folder.exists():
        raise MclnfError(f"image folder {folder} does not exist (expected a folder of images)")
    if not folder.is_dir():
        raise MclnfError(f"image folder {folder} is not a folder (expected a folder of images)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))
    if not files:
        raise MclnfError(f"image folder {folder} is empty (expected {_EXPECTED_FILES} files)")
    return files


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Decode the first frame of an image file.

    Returns:
        (H, W) or (H, W, C) array: uint8 for 8-bit images (C in {3, 4}), float32 in [0, 1] for
        16-bit and float images.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                array = np.asarray(image, dtype=np.float32)
                peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
                if image.mode == "F" and array.max() <= 1.0:
                    peak = 1.0
                return np.clip(array / peak, 0.0, 1.0)
            if image.mode in ("1", "L", "LA", "P", "PA") and _is_gray(image):
                return np.asarray(image.convert("L"))
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises many types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MclnfError(
            f"image {path} could not be decoded (expected a {_EXPECTED_FILES} image): {reason}"
        ) from None


def _is_gray(image: Image.Image) -> bool:
    if image.mode != "P" and image.mode != "PA":
        return True
    palette = np.asarray(image.convert("RGB"))
    return bool(
        np.all(palette[..., 0] == palette[..., 1]) and np.all(palette[..., 1] == palette[..., 2])
    )


def fit_image(
    image: np.ndarray, size: tuple[int, int] | None, channels: int, name: str = "image"
) -> np.ndarray:
    """Crop an image to the aspect of ``size``, resize it, and give it ``channels`` channels.

    Args:
        image: (H, W) or (H, W, C) with C in {1, 3, 4}; uint8, uint16, bool, or float in [0, 1].
        size: (height, width) to produce, or None to keep the image's size.
        channels: 1 (RGB becomes luminance) or 3 (gray is replicated); alpha is dropped.
        name: how errors refer to the image.

    Returns:
        (height, width, channels) float32 in [0, 1].
    """
    if channels not in (1, 3):
        raise MclnfError(f"channels={channels} for {name}: expected 1 (gray) or 3 (RGB)")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if (
        array.ndim != 3
        or array.shape[2] not in (1, 3, 4)
        or array.shape[0] < 1
        or array.shape[1] < 1
    ):
        raise MclnfError(
            f"{name} has shape {tuple(np.shape(image))}, expected (H, W) or (H, W, C) with C in "
            "1, 3 or 4"
        )
    if array.dtype != np.uint8:  # check the range before resampling can ring past it
        array = _to_unit_float(array, name)
    if size is not None:
        height, width = int(size[0]), int(size[1])
        if height < 1 or width < 1:
            raise MclnfError(f"image size {tuple(size)} must be positive (height, width)")
        array = _resize(_crop_to_aspect(array, height / width), height, width)
    array = _to_unit_float(array, name)[:, :, :3]  # a no-op check for floats by now
    if channels == 1 and array.shape[2] == 3:
        array = (array @ _LUMA)[:, :, None]
    elif channels == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)


def _crop_to_aspect(array: np.ndarray, aspect: float) -> np.ndarray:
    """Largest centred crop whose height / width is ``aspect``."""
    height, width = array.shape[:2]
    if height / width > aspect:
        new_height = max(1, round(width * aspect))
        top = (height - new_height) // 2
        return array[top : top + new_height]
    new_width = max(1, round(height / aspect))
    left = (width - new_width) // 2
    return array[:, left : left + new_width]


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """LANCZOS resize of (H, W, C); uint8 stays uint8 (fast path), the rest goes through float."""
    if array.shape[:2] == (height, width):
        return array
    if array.dtype == np.uint8 and array.shape[2] in (1, 3, 4):
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
        source = array[:, :, 0] if mode == "L" else array
        resized = Image.fromarray(source, mode=mode).resize(
            (width, height), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        return np.asarray(resized).reshape(height, width, array.shape[2])
    planes = [
        np.asarray(
            Image.fromarray(array[:, :, c].astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS
            )
        )
        for c in range(array.shape[2])
    ]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0)  # LANCZOS rings past [0, 1]


def _to_unit_float(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if not np.isfinite(array).all() or low < -1e-3 or high > 1.0 + 1e-3:
            raise MclnfError(
                f"{name} has float values in [{low:.3g}, {high:.3g}], expected values in [0, 1]"
            )
        return array
    raise MclnfError(f"{name} has dtype {array.dtype}, expected uint8, uint16, bool or float")


def images_to_signal_set(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    size: tuple[int, int] | None = None,
    channels: int = 3,
    splits: tuple[int, int] = (2, 2),
    sources: Sequence[str] | None = None,
) -> SignalSet:
    """Fit in-memory images to one grid and cut it into ``splits`` patches (row-major).

    Args:
        images: S arrays accepted by :func:`fit_image`.
        names: S names, used in reports and errors.
        size: (H, W) for all images; None requires every image to have the first one's size.
        channels: 1 or 3.
        splits: (rows, columns) of patches; H and W must be multiples of them.
        sources: what each image was cut from (e.g. the photo of a tile), so that splits keep
            a source on one side; None: each image is its own source.

    Returns:
        SignalSet with coords (H*W, 2) as (y, x), values (S, H*W, channels), T = rows*columns.
    """
    if len(images) == 0:
        raise MclnfError("no images given (expected at least one image)")
    if len(images) != len(names):
        raise MclnfError(f"{len(images)} images but {len(names)} names (expected one per image)")
    if size is None:
        size = tuple(np.shape(images[0])[:2])
    check_splits(tuple(size), tuple(splits))
    fitted = []
    for image, name in zip(images, names, strict=True):
        array = fit_image(image, size, channels, name=f"image {name}")
        if array.shape[:2] != tuple(size):
            raise MclnfError(f"image {name} has size {array.shape[:2]}, expected {tuple(size)}")
        fitted.append(array)
    grid_shape = (int(size[0]), int(size[1]))
    values = torch.from_numpy(np.stack(fitted)).reshape(len(fitted), -1, channels)
    return SignalSet(
        modality="image",
        names=list(names),
        coords=grid_coords(grid_shape),
        values=values,
        grid_shape=grid_shape,
        segment_index=grid_segments(grid_shape, tuple(splits)),
        sources=list(sources or names),
    )


def load_image_folder(
    path: str | Path,
    size: tuple[int, int] = (32, 32),
    channels: int = 3,
    splits: tuple[int, int] = (2, 2),
    limit: int | None = None,
) -> SignalSet:
    """Every image directly inside a folder (sorted by name) as one SignalSet.

    Args:
        path: folder of .png/.jpg/.jpeg/.bmp/.tif/.tiff/.gif files.
        size: (H, W); each image is centre-cropped to this aspect, then resized.
        channels: 1 or 3.
        splits: (rows, columns) of patches.
        limit: keep only the first ``limit`` files (None: all).

    Returns:
        SignalSet with coords (H*W, 2), values (S, H*W, channels); each file is its own source.
    """
    check_splits(tuple(size), tuple(splits))
    files = list_image_files(path)[:limit]
    images = [read_image(file) for file in files]
    return images_to_signal_set(images, [file.name for file in files], size, channels, splits)
