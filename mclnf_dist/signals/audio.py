"""Audio as signals: read, downmix, resample, and cut fixed-length windows into time chunks.

A neural field for audio maps a time ``t`` in [-1, 1] to an amplitude; all windows of a set have
the same length and sample rate, so they share one grid. Windows are chosen deterministically and
near-silent ones are skipped when possible, because a silent window teaches a field nothing and
inflates PSNR.
"""

from collections.abc import Sequence
from math import gcd
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

from mclnf_dist.errors import MclnfError
from mclnf_dist.signals.segments import check_splits, grid_coords, grid_segments
from mclnf_dist.signals.signal_set import SignalSet

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
SILENCE_RMS = 0.01
"""A window whose RMS amplitude (full scale 1) is below this (-40 dBFS) counts as silent."""


def list_audio_files(folder: str | Path) -> list[Path]:
    """Audio files directly inside ``folder``, sorted by name (other files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MclnfError(f"audio folder {folder} does not exist (expected a folder of audio)")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        raise MclnfError(
            f"audio folder {folder} is empty (expected {'/'.join(AUDIO_EXTENSIONS)} files)"
        )
    return files


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file with libsndfile.

    Returns:
        ((frames, channels) float32 in [-1, 1], sample rate in Hz).
    """
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise MclnfError(
            f"audio {path} has unsupported extension {path.suffix or '(none)'!r} "
            f"(expected one of {', '.join(AUDIO_EXTENSIONS)})"
        )
    if not path.is_file():
        raise MclnfError(f"audio {path} does not exist (expected an audio file)")
    import soundfile  # lazily: libsndfile is only needed for audio

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile errors, truncated files
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MclnfError(
            f"audio {path} could not be read (expected a {'/'.join(AUDIO_EXTENSIONS)} file): "
            f"{reason}"
        ) from None
    return data, int(rate)


def to_mono(waveform: np.ndarray, name: str) -> np.ndarray:
    """Average the channels of a waveform.

    Args:
        waveform: (L,) mono or (L, C) with C >= 1 channels, amplitude in [-1, 1].
        name: how errors refer to the waveform.

    Returns:
        (L,) float32.
    """
    array = np.asarray(waveform)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] < 1:
        raise MclnfError(
            f"{name} has shape {tuple(np.shape(waveform))}, expected (samples,) or "
            "(samples, channels) with at least one channel"
        )
    if array.shape[0] == 0:
        raise MclnfError(f"{name} has no samples (shape {tuple(array.shape)})")
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise MclnfError(f"{name} has dtype {array.dtype} or non-finite values, expected floats")
    return array.astype(np.float32).mean(axis=1)


def resample(waveform: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(L,) at ``rate_in`` Hz -> (L * rate_out / rate_in,) at ``rate_out`` Hz (polyphase FIR)."""
    if rate_in == rate_out:
        return waveform
    common = gcd(rate_in, rate_out)
    resampled = resample_poly(waveform, rate_out // common, rate_in // common)
    return np.clip(resampled, -1.0, 1.0).astype(np.float32)


def window_starts(
    waveform: np.ndarray, length: int, count: int | None, hop: int | None, name: str
) -> list[int]:
    """Deterministic start samples of the windows to cut from a (L,) waveform.

    ``count`` windows evenly spaced over the waveform, preferring non-silent ones; or, with
    ``count=None``, every non-silent window at stride ``hop`` (default ``length``).
    """
    total = waveform.shape[0]
    if total < length:
        raise MclnfError(
            f"{name} has {total} samples after resampling, expected at least {length} "
            "(one window); use a shorter window length or a longer file"
        )
    step = max(1, (hop or length) if count is None else length // 8)
    candidates = np.arange(0, total - length + 1, step)
    power = np.concatenate([[0.0], np.cumsum(waveform.astype(np.float64) ** 2)])
    rms = np.sqrt(np.maximum(power[candidates + length] - power[candidates], 0.0) / length)
    loud = candidates[rms >= SILENCE_RMS]
    if count is None:
        return [int(s) for s in (loud if len(loud) else candidates)]
    pool = loud if len(loud) >= count else candidates
    if len(pool) < count:
        raise MclnfError(
            f"{name} has {total} samples, too few for {count} distinct windows of {length} "
            "samples; lower windows_per_file"
        )
    chosen = np.round(np.linspace(0, len(pool) - 1, count)).astype(int)
    return [int(pool[i]) for i in chosen]


def waveforms_to_signal_set(
    waveforms: Sequence[np.ndarray],
    rates: Sequence[int],
    names: Sequence[str],
    sample_rate: int = 8000,
    length: int = 4096,
    splits: tuple[int] = (4,),
    windows_per_file: int | None = 1,
    hop: int | None = None,
    sources: Sequence[str] | None = None,
) -> SignalSet:
    """Cut windows from in-memory waveforms into one SignalSet of time chunks.

    Args:
        waveforms: (L,) or (L, C) float arrays in [-1, 1], one per source.
        rates: the sample rate of each waveform, Hz.
        names: one name per waveform, used in window names and errors.
        sample_rate: every waveform is resampled to this rate.
        length: samples per window L'; must be a multiple of splits[0].
        splits: (T,) number of time chunks per window.
        windows_per_file: windows per waveform (evenly spaced), or None for every window at
            stride ``hop``.
        hop: stride between windows in samples when ``windows_per_file`` is None.
        sources: how errors refer to each waveform, e.g. its file path (default: ``names``).

    Returns:
        SignalSet with coords (L', 1), values (S, L', 1) = (amplitude + 1) / 2; each window's
        source is its waveform's name (windows of one file share samples when they overlap).
    """
    if len(waveforms) == 0:
        raise MclnfError("no audio given (expected at least one file)")
    if windows_per_file is not None and windows_per_file < 1:
        raise MclnfError(f"windows_per_file={windows_per_file}, expected >= 1 or None")
    if sample_rate < 1 or length < 1:
        raise MclnfError(f"sample_rate={sample_rate} and length={length} must be positive")
    check_splits((length,), tuple(splits))
    windows, window_names, window_sources = [], [], []
    sources = names if sources is None else sources
    for waveform, rate, name, source in zip(waveforms, rates, names, sources, strict=True):
        mono = resample(to_mono(waveform, f"audio {source}"), int(rate), sample_rate)
        for start in window_starts(mono, length, windows_per_file, hop, f"audio {source}"):
            windows.append(mono[start : start + length])
            window_names.append(f"{name}@{start / sample_rate:.3f}s")
            window_sources.append(str(name))
    values = np.clip((np.stack(windows) + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    return SignalSet(
        modality="audio",
        names=window_names,
        coords=grid_coords((length,)),
        values=torch.from_numpy(values)[:, :, None],
        grid_shape=(length,),
        segment_index=grid_segments((length,), tuple(splits)),
        sources=window_sources,
    )


def load_audio_files(
    paths: Sequence[str | Path],
    sample_rate: int = 8000,
    length: int = 4096,
    splits: tuple[int] = (4,),
    windows_per_file: int | None = 1,
    hop: int | None = None,
) -> SignalSet:
    """Read wav/flac/ogg/... files and cut them into one SignalSet of windows.

    See :func:`waveforms_to_signal_set` for the arguments; stereo or multi-channel files are
    averaged to mono and every file is resampled to ``sample_rate``.

    Returns:
        SignalSet with coords (length, 1), values (S, length, 1).
    """
    check_splits((length,), tuple(splits))
    decoded = [read_audio(path) for path in paths]
    return waveforms_to_signal_set(
        [data for data, _ in decoded],
        [rate for _, rate in decoded],
        [Path(path).name for path in paths],
        sample_rate,
        length,
        splits,
        windows_per_file,
        hop,
        sources=[str(path) for path in paths],
    )
