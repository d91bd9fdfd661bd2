"""Photos to a posed scene with pycolmap: the fox's own photos give the capture's poses back (up to
a similarity), the COLMAP model it writes trains end to end, and bad input is one line."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.from_photos import PoseOptions, frames_from_video, poses_from_photos
from mclnf_dist.scenes.pose_alignment import pose_errors
from mclnf_dist.scenes.scene import load_scene

FOX = Path(__file__).resolve().parents[2].parent / "shared" / "scenes" / "fox"


@pytest.fixture(scope="module")
def posed_fox(tmp_path_factory) -> Path:
    if not FOX.is_dir():
        pytest.skip(f"the fox capture is not at {FOX}")
    out = tmp_path_factory.mktemp("fox-posed")
    poses_from_photos(str(FOX / "images"), str(out), PoseOptions(max_size=384, max_features=2048))
    return out


def test_the_fox_photos_give_the_captures_poses_up_to_a_similarity(posed_fox):
    ours = {Path(f.file_path).name: f.c2w for f in load_scene(str(posed_fox), "all").frames}
    fox = load_scene(str(FOX), "all", skip_missing_images=True)
    theirs = {Path(f.file_path).name: f.c2w for f in fox.frames}
    assert len(ours) >= 45, f"{len(ours)} of 50 registered"
    errors = pose_errors(ours, theirs)
    centre_error, degrees = errors.centre.max(), errors.degrees.max()
    assert centre_error < 0.02 and degrees < 2.0, (centre_error, degrees)


def test_the_written_colmap_model_trains_end_to_end(posed_fox, tmp_path):
    from mclnf_dist.config import parse_config
    from mclnf_dist.experiments.city_config import CityExperimentConfig
    from mclnf_dist.experiments.recipes import recipes_for
    from mclnf_dist.jobs.city import run_city

    scene = tmp_path / "colmap-only"  # the model and the images, no transforms.json
    shutil.copytree(posed_fox / "images", scene / "images")
    shutil.copytree(posed_fox / "sparse", scene / "sparse")
    argv = ["--recipe", "scene-tiny", "--data.scene", str(scene), "--data.downscale", "4",
            "--data.work-dir", str(tmp_path / "work"), "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    cfg = parse_config(CityExperimentConfig, argv, recipes=recipes_for(CityExperimentConfig))
    report = run_city(cfg)
    for scores in report["block_training"]["inits"].values():  # 4 steps: learning, not quality
        curve = {int(step): psnr for step, psnr in scores["probe_curve"].items()}
        assert curve[max(curve)] > curve[min(curve)] and np.isfinite(scores["heldout_image_psnr"])


def test_bad_photo_folders_and_videos_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MclnfError, match=r"empty: no images \(expected \.jpg"):
        poses_from_photos(str(tmp_path / "empty"), str(tmp_path / "out"))
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.new("RGB", (32, 24)).save(broken / "a.jpg")
    (broken / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(MclnfError, match=r"b\.jpg: cannot read the image"):
        poses_from_photos(str(broken), str(tmp_path / "out"))
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    Image.new("RGB", (32, 24)).save(sizes / "a.jpg")
    Image.new("RGB", (24, 32)).save(sizes / "b.jpg")
    with pytest.raises(MclnfError, match=r"images differ in size \(.*--no-single-camera"):
        poses_from_photos(str(sizes), str(tmp_path / "out"))
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(MclnfError, match=r"clip\.mp4: cannot decode the video"):
        frames_from_video(str(tmp_path / "clip.mp4"), str(tmp_path / "frames"), 2.0)


def test_a_video_becomes_frames_at_the_asked_rate(tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(30):  # 3 seconds
            pixels = np.full((32, 32, 3), 8 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    count = frames_from_video(str(path), str(tmp_path / "frames"), fps=2.0)
    assert count == 6 and len(list((tmp_path / "frames").glob("*.jpg"))) == 6
