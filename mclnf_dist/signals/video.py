"""Video as signals: decode clips of frames, fit each frame like an image, cut time x space chunks.

A video field maps (t, y, x) in [-1, 1]^3 to a colour. Clips of ``frames`` frames (every
``stride``-th frame) are taken at evenly spaced starts so that a few videos give many signals.
Only the frames a clip needs are converted and resized, so a long HD video costs little memory.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.signals.images import fit_image, list_image_files, read_image
from mclnf_dist.signals.segments import check_splits, grid_coords, grid_segments
from mclnf_dist.signals.signal_set import SignalSet

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def clip_starts(num_frames: int, frames: int, clips: int, stride: int, name: str) -> list[int]:
    """First frames of ``clips`` evenly spaced, distinct clips ((frames - 1) * stride + 1 long)."""
    if frames < 1 or clips < 1 or stride < 1:
        raise MclnfError(
            f"frames={frames}, clips={clips}, stride={stride} for {name}: expected positive values"
        )
    span = (frames - 1) * stride + 1
    if num_frames < span:
        raise MclnfError(
            f"{name} has {num_frames} frames, expected at least {span} for clips of {frames} "
            f"frames with stride {stride}"
        )
    if clips > num_frames - span + 1:
        raise MclnfError(
            f"{name} has {num_frames} frames, too few for {clips} distinct clips of {frames} "
            f"frames with stride {stride}; lower clips"
        )
    return [int(s) for s in np.round(np.linspace(0, num_frames - span, clips)).astype(int)]


def _decode_video(
    path: Path, wanted: set[int], size: tuple[int, int] | None, channels: int
) -> tuple[dict[int, np.ndarray], int]:
    """Decode ``path``: {index: fitted (H, W, C) frame} for ``wanted``, and frames decoded."""
    import av  # imported lazily: PyAV loads FFmpeg, which image-only users never need

    fitted: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MclnfError(f"video {path} has no video stream (expected a video file)")
            container.streams.video[0].thread_type = "AUTO"  # frame-parallel decoding
            last = max(wanted, default=-1)
            for index, frame in enumerate(container.decode(video=0)):
                if 0 <= last < index:
                    break  # every wanted frame is in hand; skip decoding the rest
                count = index + 1
                if index in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    fitted[index] = fit_image(rgb, size, channels, name=f"video {path}")
    except MclnfError:
        raise
    except Exception as error:  # FFmpeg errors: corrupt or unsupported container/codec
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MclnfError(
            f"video {path} could not be decoded (expected a {'/'.join(VIDEO_EXTENSIONS)} file "
            f"or a folder of frame images): {reason}"
        ) from None
    if count == 0:
        raise MclnfError(f"video {path} has no frames (expected a video with frames)")
    return fitted, count


def _header_frame_count(path: Path) -> int:
    """Frame count the container header states (0 when unknown or unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            return int(streams[0].frames) if streams else 0
    except Exception:  # reported properly by _decode_video
        return 0


def read_clips(
    source: str | Path,
    frames: int,
    size: tuple[int, int],
    channels: int = 3,
    clips: int = 1,
    stride: int = 1,
) -> tuple[list[np.ndarray], list[str]]:
    """Evenly spaced clips from one video file or frame folder.

    Returns:
        (clips arrays of (frames, H, W, channels) float32 in [0, 1], one name per clip).
    """
    path = Path(source)
    if path.is_dir():
        files = list_image_files(path)
        starts = clip_starts(len(files), frames, clips, stride, f"frame folder {path}")
        wanted = {s + k * stride for s in starts for k in range(frames)}
        fitted = {
            i: fit_image(read_image(files[i]), size, channels, name=f"frame {files[i]}")
            for i in sorted(wanted)
        }
    elif path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise MclnfError(
                f"video {path} has unsupported extension {path.suffix or '(none)'!r} (expected "
                f"{'/'.join(VIDEO_EXTENSIONS)} or a folder of frame images)"
            )
        # Trust the header's frame count when it has one (one decoding pass); if it is empty or
        # overstated, count by decoding and pick the clips again.
        count = _header_frame_count(path)
        if count == 0:
            _, count = _decode_video(path, set(), None, channels)
        starts = clip_starts(count, frames, clips, stride, f"video {path}")
        wanted = {s + k * stride for s in starts for k in range(frames)}
        fitted, decoded = _decode_video(path, wanted, size, channels)
        if len(fitted) < len(wanted):
            starts = clip_starts(decoded, frames, clips, stride, f"video {path}")
            wanted = {s + k * stride for s in starts for k in range(frames)}
            fitted, _ = _decode_video(path, wanted, size, channels)
    else:
        raise MclnfError(
            f"video {path} does not exist (expected a video file or a folder of frame images)"
        )
    arrays = [np.stack([fitted[s + k * stride] for k in range(frames)]) for s in starts]
    return arrays, [f"{path.name}@{s}" for s in starts]


def load_videos(
    sources: Sequence[str | Path],
    frames: int = 8,
    size: tuple[int, int] = (32, 32),
    splits: tuple[int, int, int] = (2, 2, 2),
    clips: int = 1,
    stride: int = 1,
    channels: int = 3,
) -> SignalSet:
    """Clips from several videos (files or frame folders) as one SignalSet.

    Args:
        sources: video files (decoded with PyAV) or folders of frame images (sorted by name).
        frames: F frames per clip; must be a multiple of splits[0].
        size: (H, W) of each frame; frames are centre-cropped to this aspect, then resized.
        splits: (time, rows, columns) chunks; time varies slowest, so chunks arrive in time order.
        clips: clips per source, evenly spaced.
        stride: take every ``stride``-th frame.
        channels: 1 or 3.

    Returns:
        SignalSet with coords (F*H*W, 3) as (t, y, x), values (S, F*H*W, channels); a clip's
        source is its video file's or frame folder's name.
    """
    grid_shape = (int(frames), int(size[0]), int(size[1]))
    check_splits(grid_shape, tuple(splits))
    if not sources:
        raise MclnfError("no videos given (expected at least one video file or frame folder)")
    arrays, names, clip_sources = [], [], []
    for source in sources:
        clip_arrays, clip_names = read_clips(source, frames, size, channels, clips, stride)
        arrays += clip_arrays
        names += clip_names
        clip_sources += [Path(source).name] * len(clip_names)
    values = torch.from_numpy(np.stack(arrays)).reshape(len(arrays), -1, channels)
    return SignalSet(
        modality="video",
        names=names,
        coords=grid_coords(grid_shape),
        values=values,
        grid_shape=grid_shape,
        segment_index=grid_segments(grid_shape, tuple(splits)),
        sources=clip_sources,
    )


def load_video(
    source: str | Path,
    frames: int = 8,
    size: tuple[int, int] = (32, 32),
    splits: tuple[int, int, int] = (2, 2, 2),
    clips: int = 1,
    stride: int = 1,
    channels: int = 3,
) -> SignalSet:
    """Clips of one video file or frame folder as a SignalSet; see :func:`load_videos`."""
    return load_videos([source], frames, size, splits, clips, stride, channels)
