"""``mclnf render`` on a saved city model: every camera path gives its PNGs and a playable MP4."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from mclnf_dist.cli import main as mclnf
from mclnf_dist.scenes.scene import load_scene


def scene_of(model: Path) -> Path:
    return model.parents[4] / "scene"


def frames_of(video: Path) -> int:
    with av.open(str(video)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("cameras", ["orbit", "fly-over", "held-out"])
def test_render_camera_paths_to_pngs_and_mp4(model, tmp_path, cameras):
    out = tmp_path / cameras
    mclnf(["render", "--model", str(model), "--cameras", cameras, "--frames", "3",
           "--scale", "0.5", "--out", str(out), "--device", "cpu"])  # fmt: skip
    pngs = sorted(out.glob("*.png"))
    expected = 3 if cameras != "held-out" else len(load_scene(str(scene_of(model)), "test").frames)
    assert len(pngs) == expected
    image = np.asarray(Image.open(pngs[0]))
    assert image.shape == (6, 8, 3) and image.std() > 0  # half of 16x12, not a blank frame
    assert frames_of(out / "video.mp4") == expected


def test_render_cameras_file_and_clear_errors(model, tmp_path, capsys):
    cameras = tmp_path / "cameras.json"
    pose = np.eye(4)
    pose[:3, 3] = [60.0, 60.0, 80.0]
    frame = {"file_path": "none.png", "transform_matrix": pose.tolist()}
    cameras.write_text(
        json.dumps({"fl_x": 8, "fl_y": 8, "w": 8, "h": 6, "near": 1, "far": 300, "frames": [frame]})
    )
    Image.new("RGB", (8, 6)).save(tmp_path / "none.png")
    mclnf(
        ["render", "--model", str(model), "--cameras", str(cameras), "--out", str(tmp_path / "f")]
    )
    assert len(list((tmp_path / "f").glob("*.png"))) == 1
    with pytest.raises(SystemExit):
        mclnf(["render", "--model", str(model), "--name", "nope"])
    assert "no model 'nope'" in capsys.readouterr().err


def test_render_reads_the_latest_completed_run_only(model, tmp_path, capsys):
    work = model.parents[3]  # <work>/runs/<name>/<id>/city_model
    out = tmp_path / "latest"
    mclnf(["render", "--model", str(work), "--cameras", "orbit", "--frames", "1", "--scale",
           "0.5", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert len(list(out.glob("*.png"))) == 1
    # a newer run that was interrupted (no completion marker) is never picked, nor read directly
    newer = work / "runs" / "city-demo" / "20270101-000000-ffff" / "city_model"
    newer.mkdir(parents=True)
    (newer / "blocks-meta.pt").write_bytes(b"half a file")
    from mclnf_dist.runs import city_model_folder

    assert city_model_folder(work) == model
    with pytest.raises(SystemExit) as stop:
        mclnf(["render", "--model", str(newer), "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "did not complete" in capsys.readouterr().err
