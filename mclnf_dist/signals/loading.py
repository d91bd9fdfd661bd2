"""One entry point for signal data: ``load_signal_set(modality, source, **options)``.

``source`` is ``builtin:<name>`` (an offline real dataset, see :mod:`mclnf_dist.signals.builtin`) or
a path: an image folder; an audio file or folder of audio files; a video file, a folder of frame
images, or a folder of video files. Pipelines call only this, so a config names data as a string.
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.signals.audio import list_audio_files, load_audio_files
from mclnf_dist.signals.builtin import BUILTIN_SETS
from mclnf_dist.signals.images import IMAGE_EXTENSIONS, load_image_folder
from mclnf_dist.signals.signal_set import SignalSet
from mclnf_dist.signals.video import VIDEO_EXTENSIONS, load_videos

BUILTIN_PREFIX = "builtin:"
Modality = Literal["image", "audio", "video"]
MODALITIES = get_args(Modality)
"""The signal kinds (each has built-in real data in :data:`BUILTIN_SETS`)."""


def default_source(modality: str) -> str:
    """``builtin:<first builtin set>`` of a modality, e.g. ``builtin:lfw`` for images."""
    _check_modality(modality)
    return BUILTIN_PREFIX + next(iter(BUILTIN_SETS[modality]))


def _check_modality(modality: str) -> None:
    if modality not in BUILTIN_SETS:
        raise MclnfError(f"unknown modality {modality!r} (expected one of {', '.join(MODALITIES)})")


def _call(
    loader: Callable[..., SignalSet], what: str, *args: object, **options: object
) -> SignalSet:
    """Call ``loader`` after checking ``options`` against its signature, so a typo in a config
    key is a one-line error instead of a TypeError traceback."""
    parameters = inspect.signature(loader).parameters
    allowed = [name for name in parameters if name not in ("path", "paths", "sources")]
    unknown = [key for key in options if key not in allowed]
    if unknown:
        raise MclnfError(
            f"unknown option {unknown[0]!r} for {what} (expected some of {', '.join(allowed)})"
        )
    return loader(*args, **options)


def _load_path(modality: str, path: Path, options: dict[str, object]) -> SignalSet:
    if not path.exists():
        raise MclnfError(f"{modality} source {path} does not exist (expected a file or folder)")
    what = f"{modality} {path}"
    if modality == "image":
        return _call(load_image_folder, what, path, **options)
    if modality == "audio":
        files = list_audio_files(path) if path.is_dir() else [path]
        return _call(load_audio_files, what, files, **options)
    videos = []
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if p.is_file())
        videos = [p for p in entries if p.suffix.lower() in VIDEO_EXTENSIONS]
        if not videos and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
            raise MclnfError(
                f"video folder {path} is empty (expected {'/'.join(VIDEO_EXTENSIONS)} files or "
                f"{'/'.join(IMAGE_EXTENSIONS)} frames)"
            )
    return _call(load_videos, what, videos or [path], **options)


def load_signal_set(
    modality: str, source: str | Path | None = None, **options: object
) -> SignalSet:
    """Load a SignalSet of ``modality`` (image | audio | video) from a builtin name or a path.

    Args:
        modality: ``image``, ``audio`` or ``video``.
        source: ``builtin:<name>`` or a path (see module docstring); None: the default builtin.
        **options: keyword arguments of the loader, e.g. ``size=(32, 32)``, ``splits=(2, 2)``,
            ``sample_rate=8000``, ``frames=8``.

    Returns:
        The SignalSet; values (S, N, C) in [0, 1], coords (N, d) in [-1, 1].
    """
    _check_modality(modality)
    source = default_source(modality) if source is None else source
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        sets = BUILTIN_SETS[modality]
        if name not in sets:
            valid = ", ".join(BUILTIN_PREFIX + n for n in sets)
            raise MclnfError(f"unknown {modality} source {source!r} (expected one of {valid})")
        return _call(sets[name], f"{modality} {source}", **options)
    return _load_path(modality, Path(source).expanduser(), dict(options))


def split_by_source(
    signal_set: SignalSet, num_train: int, num_test: int, seed: int = 0
) -> tuple[SignalSet, SignalSet]:
    """Train and test signals that share no source, the same for the same seed on any machine.

    Signals cut from one source (windows of a file, tiles of a photo, clips of a video) share
    content, so a signal-by-signal split would let held-out signals leak into meta-training.
    Here sources are visited in a seeded shuffle and each one that still fits goes to the test
    side whole, until it holds ``num_test`` signals. When no remaining source fits the gap
    exactly, the smallest source that can fill it gives evenly spaced signals to the test side
    and the rest of that source is dropped (it goes to neither side). So the test side always
    holds exactly ``num_test`` signals (budgets and intervals stay comparable across data sets)
    and never shares a source with training. ``num_train`` signals are then drawn at random
    from the sources left. Indices inside each side stay in dataset order.

    Raises:
        MclnfError: when the sources cannot give ``num_test`` test signals and ``num_train``
            training signals apart (e.g. a single source).
    """
    if num_train < 0 or num_test < 0:
        raise MclnfError(f"num_train={num_train}, num_test={num_test}: expected counts >= 0")
    by_source: dict[str, list[int]] = {}
    for index, source in enumerate(signal_set.sources):
        by_source.setdefault(source, []).append(index)
    generator = torch.Generator().manual_seed(seed)
    names = list(by_source)
    order = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
    test: list[int] = []
    used: set[str] = set()
    for source in order:
        if len(test) + len(by_source[source]) <= num_test:
            test += by_source[source]
            used.add(source)
    missing = num_test - len(test)
    if missing > 0:
        fillers = [s for s in order if s not in used and len(by_source[s]) >= missing]
        if fillers:
            source = min(fillers, key=lambda s: len(by_source[s]))  # ties: shuffled order
            members = by_source[source]
            picks = np.round(np.linspace(0, len(members) - 1, missing)).astype(int)
            test += [members[i] for i in picks]
            used.add(source)
    pool = [i for s in order if s not in used for i in by_source[s]]
    if len(test) < num_test or len(pool) < num_train:
        raise MclnfError(
            f"num_train={num_train} + num_test={num_test} {signal_set.modality} signals requested "
            f"from sources that share none, but its {signal_set.num_signals} signals come from "
            f"{len(names)} sources ({_largest(by_source)}); expected fewer signals or more "
            "sources (e.g. more clips/windows per file)"
        )
    pick = torch.randperm(len(pool), generator=generator)[:num_train].tolist()
    train = sorted(pool[i] for i in pick)
    return signal_set.subset(train), signal_set.subset(sorted(test))


def _largest(by_source: dict[str, list[int]]) -> str:
    """``"largest: a.wav 7, b.wav 3, ..."`` for an error message."""
    sizes = sorted(by_source.items(), key=lambda item: -len(item[1]))
    listed = ", ".join(f"{name} {len(members)}" for name, members in sizes[:4])
    return f"largest: {listed}" + (", ..." if len(sizes) > 4 else "")


def overlap_fraction(train: SignalSet, test: SignalSet) -> float:
    """The fraction of ``test`` signals whose source also gives a ``train`` signal (0.0: no
    leak, 1.0: every held-out signal shares its source with meta-training)."""
    if test.num_signals == 0:
        return 0.0
    seen = set(train.sources)
    return sum(source in seen for source in test.sources) / test.num_signals
