"""Leak-free splits: held-out signals share no source (file, photo) with meta-training signals,
the split depends on ``data.split_seed`` only, and each quick section's real data splits so."""

import re

import pytest
import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.recipes import recipe
from mclnf_dist.experiments.signals_config import DataConfig, load_data, loader_options
from mclnf_dist.signals.builtin import lfw_faces, skimage_photos
from mclnf_dist.signals.loading import overlap_fraction, split_by_source
from mclnf_dist.signals.segments import grid_coords, grid_segments
from mclnf_dist.signals.signal_set import SignalSet


def made_set(sources: list[str], modality: str = "audio") -> SignalSet:
    """Signals ``s0, s1, ...`` of 4 samples whose value is their index, cut from ``sources``."""
    count = len(sources)
    values = torch.arange(count, dtype=torch.float32)[:, None, None].expand(count, 4, 1) / count
    return SignalSet(
        modality=modality,
        names=[f"s{i}" for i in range(count)],
        coords=grid_coords((4,)),
        values=values.contiguous(),
        grid_shape=(4,),
        segment_index=grid_segments((4,), (2,)),
        sources=sources,
    )


def spans(signals: SignalSet, pattern: str, span: float) -> list[tuple[str, float, float]]:
    """(file, first, last) position of each window/clip, read from names like ``a.wav@1.000s``."""
    out = []
    for name in signals.names:
        file, start = re.fullmatch(pattern, name).groups()
        out.append((file, float(start), float(start) + span))
    return out


def shared_positions(a: list[tuple], b: list[tuple]) -> int:
    """How many pairs of windows (one of ``a``, one of ``b``) cover a common position of a file."""
    return sum(fa == fb and sa < eb and sb < ea for fa, sa, ea in a for fb, sb, eb in b)


# ----------------------------------------------------------------------------- the split itself


def test_sources_default_to_names_and_survive_subset():
    plain = SignalSet("image", ["a", "b"], grid_coords((2,)), torch.zeros(2, 2, 1), (2,),
                      grid_segments((2,), (1,)))  # fmt: skip
    assert plain.sources == ["a", "b"]  # old constructors: each signal its own source
    signals = made_set(["x", "y", "x"])
    assert signals.subset([2, 1]).sources == ["x", "y"]
    assert signals.to(torch.device("cpu")).sources == ["x", "y", "x"]
    with pytest.raises(MclnfError, match=r"3 names but 2 sources \(expected one source per"):
        SignalSet("audio", ["a", "b", "c"], signals.coords, signals.values, (4,),
                  signals.segment_index, ["x", "y"])  # fmt: skip


def test_overlap_fraction_counts_held_out_signals_whose_source_trains():
    signals = made_set(["a", "a", "b", "c", "c", "d"])
    assert overlap_fraction(signals.subset([0, 2]), signals.subset([1, 3, 5])) == pytest.approx(
        1 / 3
    )  # s1 shares a with s0; b and d are only held out
    assert overlap_fraction(signals.subset([0, 3]), signals.subset([1, 4])) == 1.0
    assert overlap_fraction(signals.subset([0, 1]), signals.subset([2, 3, 4, 5])) == 0.0


def test_split_keeps_sources_whole_fills_the_test_side_exactly_and_follows_the_seed():
    sources = ["a"] * 3 + ["b"] * 5 + ["c"] * 2 + ["d"] * 4 + ["e"] * 1 + ["f"] * 6
    signals = made_set(sources)
    train, test = split_by_source(signals, 8, 4, seed=0)
    again_train, again_test = split_by_source(signals, 8, 4, seed=0)
    assert (train.names, test.names) == (again_train.names, again_test.names)
    assert test.num_signals == 4 and train.num_signals == 8
    assert not set(train.sources) & set(test.sources) and overlap_fraction(train, test) == 0.0
    partial = [s for s in set(test.sources) if test.sources.count(s) < sources.count(s)]
    assert len(partial) <= 1  # whole sources, but for at most one that fills the last gap
    splits = {tuple(split_by_source(signals, 8, 4, seed)[1].names) for seed in range(6)}
    assert len(splits) > 1  # the seed chooses which sources are held out


def test_a_source_too_large_gives_evenly_spaced_test_signals_and_the_rest_is_dropped():
    signals = made_set(["x"] * 6 + ["y"] * 7)
    train, test = split_by_source(signals, 7, 4, seed=0)
    assert test.names == ["s0", "s2", "s3", "s5"]  # the smaller source, spread over it
    assert train.names == [f"s{i}" for i in range(6, 13)]  # s1 and s4 go nowhere
    with pytest.raises(MclnfError, match=r"num_train=8 \+ num_test=4 audio signals .* 2 sources"):
        split_by_source(signals, 8, 4, seed=0)


def test_a_single_source_cannot_split_and_says_so_in_one_line():
    signals = made_set(["only.wav"] * 5)
    with pytest.raises(MclnfError) as error:
        split_by_source(signals, 2, 1, seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("num_train=2 + num_test=1 audio signals requested")
    assert "5 signals come from 1 sources (largest: only.wav 5)" in message


def test_loader_options_pass_the_set_sizes_only():
    assert loader_options(DataConfig()) == {}
    data = DataConfig(size=(96, 96), scale=2, sample_rate=16000, hop=8000)
    assert loader_options(data) == {"size": (96, 96), "scale": 2, "sample_rate": 16000,
                                    "hop": 8000}  # fmt: skip
    with pytest.raises(MclnfError, match=r"data.size=\(96, 0\): expected both height and width"):
        loader_options(DataConfig(size=(96, 0)))


def test_builtin_sources_are_each_face_and_each_photo():
    faces = lfw_faces(size=(8, 8), limit=5)
    assert faces.sources == faces.names == ["lfw000", "lfw001", "lfw002", "lfw003", "lfw004"]
    photos = skimage_photos(size=(96, 96), scale=2, tiles_per_photo=4)
    assert photos.num_signals == 46 and len(set(photos.sources)) == 13
    assert all(name.startswith(source + "@") for name, source in zip(
        photos.names, photos.sources, strict=True))  # fmt: skip
    assert max(photos.sources.count(s) for s in set(photos.sources)) == 4


# -------------------------------------------------------- every quick section's real data, split


AUDIO_WINDOW = (r"(.+)@([\d.]+)s", 1.0)
"""Audio names: ``file@start s``; quick windows last 1 s (16000 samples at 16 kHz)."""
VIDEO_CLIP = (r"(.+)@(\d+)", 15)
"""Video names: ``file@first frame``; quick clips span 15 frames (8 at the loader's stride 2)."""


@pytest.mark.parametrize(
    "name,grid_shape,held_out_sources,windows",
    [
        ("image-quick", (24, 24), None, None),
        ("photos-quick", (96, 96), ["astronaut", "coffee", "rocket"], None),
        ("audio-quick", (16000,), ["boom.wav", "secosmic_lo.wav"], AUDIO_WINDOW),
        ("video-quick", (8, 32, 32), ["carphone_pristine.mp4"], VIDEO_CLIP),
    ],
)
def test_quick_sections_hold_out_whole_sources(name, grid_shape, held_out_sources, windows):
    cfg = recipe(name)
    train, test = load_data(cfg, torch.device("cpu"))
    assert (train.num_signals, test.num_signals) == (cfg.data.num_train, cfg.data.num_test)
    assert test.grid_shape == grid_shape
    assert overlap_fraction(train, test) == 0.0
    assert not set(train.sources) & set(test.sources)
    if held_out_sources:
        assert sorted(set(test.sources)) == held_out_sources
    if windows:  # no held-out window covers a sample (frame) of a file that a training one does
        train_spans, test_spans = spans(train, *windows), spans(test, *windows)
        assert shared_positions(test_spans, train_spans) == 0
        pairs = [(a, b) for i, a in enumerate(test_spans) for b in test_spans[i + 1 :]]
        assert sum(shared_positions([a], [b]) for a, b in pairs) == 0  # distinct test windows
    if name == "audio-quick":  # the check sees overlaps: training windows at 0.5 s hops have
        pairs = [(a, b) for i, a in enumerate(train_spans) for b in train_spans[i + 1 :]]
        assert sum(shared_positions([a], [b]) for a, b in pairs) == 10  # (4.0 s is not drawn)
    if cfg.data.modality != "video":  # (decoding video twice costs seconds)
        cfg.run.seed = 7  # the run seed varies training, never the data split
        again_train, again_test = load_data(cfg, torch.device("cpu"))
        assert (again_train.names, again_test.names) == (train.names, test.names)
