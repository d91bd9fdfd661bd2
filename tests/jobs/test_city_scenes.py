"""The city job on scenes as people have them, on a real local Ray and a real sqlite MLflow:
a Blender object (per-split files, RGBA, no box) as ONE block, the real fox (instant-ngp, lens,
no box, no splits) downscaled 16x; and bad scenes, each stopped with one line naming the file and
the frame, through ``mclnf dataset ingest`` and the city job, before any work or Ray."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mclnf_dist.city.model import load_city_model
from mclnf_dist.cli import main as mclnf
from mclnf_dist.cli import run_with_clean_errors
from mclnf_dist.config import parse_config
from mclnf_dist.jobs.city import CityExperimentConfig, run_city
from mclnf_dist.jobs.city import main as city_main
from mclnf_dist.raystore.store import load_manifest
from mclnf_dist.runs import completed_runs
from mclnf_dist.scenes.scene import load_frame_image, load_scene

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--meta.outer-steps", "2",
    "--train.num-workers", "1",
    "--adapt.max-steps", "4",
    "--block.steps", "4", "--block.batch-rays", "128", "--block.probe-rays", "128",
    "--data.fit-rays-per-block", "256",
    "--data.score-rays-per-block", "128",
    "--render-views", "1",
    "--methods", "random", "maml",
    "--experiment", "scenes-it",
]  # fmt: skip


def city_args(scene: Path, work: Path, *extra: str) -> list[str]:
    return [
        *TINY, "--data.scene", str(scene), "--data.work-dir", str(work),
        "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--run-name", work.name, *extra,
    ]  # fmt: skip


def rescored_psnr(run: Path, method: str) -> float:
    """The saved city model of ``method`` rendered here on every held-out view of its scene and
    scored with a plain pooled MSE: a number computed apart from the job's scorer."""
    model = load_city_model(str(run / "city_model"), method)
    scene = load_scene(model.scene["root"], "test", **model.scene["options"])
    errors = []
    for frame in scene.frames:
        rgb = model.render(frame, scene.near, scene.far)  # deterministic samples
        truth = load_frame_image(scene, frame).astype(np.float64) / 255.0
        prediction = rgb.clamp(0.0, 1.0).double().numpy()
        errors.append(((prediction - truth) ** 2).ravel())
    return float(-10.0 * np.log10(np.concatenate(errors).mean()))


def check_run(work: Path, report: dict) -> None:
    (run,) = completed_runs(work)
    assert str(run) == report["run_folder"]
    saved = json.loads((run / "results.json").read_text())
    assert [r["method"] for r in saved["results"]] == ["random", "maml"]
    for result in saved["results"]:  # the reported PSNR is the saved model's on the held-out views
        assert rescored_psnr(run, result["method"]) == pytest.approx(result["psnr_last"], abs=0.02)
    assert (run / "novel_views.png").read_bytes()[:4] == b"\x89PNG"
    assert report["mlflow_run_id"]


def test_blender_object_as_one_block_runs_end_to_end(ray_local, tmp_path, blender_scene_factory):
    scene = blender_scene_factory(tmp_path / "object", {"train": 10, "val": 2, "test": 3})
    work = tmp_path / "one-block"
    argv = city_args(scene, work, "--data.blocks-x", "1", "--data.blocks-y", "1")
    report = run_city(parse_config(CityExperimentConfig, argv))
    check_run(work, report)
    train, test = load_manifest(str(work / "rays/train")), load_manifest(str(work / "rays/test"))
    assert train.partition.num_blocks == 1 and train.source["frames"] == 10
    assert test.source["frames"] == 3  # its held-out views are the test
    assert load_manifest(str(work / "rays/val")).source["frames"] == 2  # its own validation views
    assert sum(test.block_rows.values()) > 0
    assert report["held_out_blocks"]["maml"]["params"] > 0


def test_real_fox_downscaled_runs_end_to_end(ray_local, tmp_path, fox_scene):
    work = tmp_path / "fox"
    argv = city_args(fox_scene, work, "--data.downscale", "16", "--data.blocks-x", "2",
                     "--data.blocks-y", "1")  # fmt: skip
    report = run_city(parse_config(CityExperimentConfig, argv))
    check_run(work, report)
    train = load_manifest(str(work / "rays/train"))
    assert train.source["frames"] == 43 and train.source["pixels"] == 43 * 67 * 120
    assert train.options["downscale"] == 16
    assert load_manifest(str(work / "rays/test")).source["frames"] == 7
    assert not (work / "rays" / "val").exists()  # its "val" would be its test views: none
    params = json.loads(Path(report["run_folder"], "results.json").read_text())["config"]["data"]
    assert params["downscale"] == 16


def small_scene(root: Path, **top) -> Path:
    """Four 8x6 views of a nerfstudio scene with no box and no depth range."""
    from PIL import Image

    root.mkdir(parents=True)
    frames = []
    for i in range(4):
        Image.new("RGB", (8, 6), (10 * i, 50, 90)).save(root / f"v{i}.png")
        pose = [[1, 0, 0, i], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
        frames.append({"file_path": f"v{i}.png", "transform_matrix": pose})
    meta = {"fl_x": 6.0, "fl_y": 6.0, "cx": 4.0, "cy": 3.0, "w": 8, "h": 6, "frames": frames}
    (root / "transforms.json").write_text(json.dumps({**meta, **top}))
    return root


def remove_image(root: Path) -> None:
    (root / "v2.png").unlink()


def edit_frame(index: int, **values):
    def change(root: Path) -> None:
        meta = json.loads((root / "transforms.json").read_text())
        meta["frames"][index].update(values)
        (root / "transforms.json").write_text(json.dumps(meta))

    return change


def one_point(root: Path) -> None:
    meta = json.loads((root / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["transform_matrix"][0][3] = 0.0
    (root / "transforms.json").write_text(json.dumps(meta))


BAD = {
    "missing image": (remove_image, r"frame 2 \(v2.png\): image file not found"),
    "wrong size": (edit_frame(1, w=9), r"frame 1 \(v1.png\): image .* is 8x6, transforms say"),
    "camera model": (edit_frame(3, camera_model="FISHEYE624"), r"frame 3 .*unknown camera_model"),
    "nan pose": (
        edit_frame(
            2, transform_matrix=[[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
        ),  # fmt: skip
        r"frame 2 \(v2.png\): 'transform_matrix' contains NaN",
    ),
    "one-point cameras": (one_point, r"cannot derive a scene box: all 4 cameras are at one point"),
    "folding lens": (edit_frame(0, k1=-3.0), r"frame 0 \(v0.png\): lens OPENCV k1=-3 is not inv"),
}


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_scene_is_one_line_before_any_work(case, tmp_path, capsys):
    change, message = BAD[case]
    scene = small_scene(tmp_path / "scene")
    change(scene)
    lines = []
    for entry, argv in (
        (mclnf, ["dataset", "ingest", str(scene), str(tmp_path / "rays"), "--num-cpus", "1"]),
        (lambda a: run_with_clean_errors(city_main, a), city_args(scene, tmp_path / "work")),
    ):
        with pytest.raises(SystemExit) as stop:
            entry(argv)
        assert stop.value.code == 2
        errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert len(errors) == 1, errors
        lines.append(errors[0])
    assert lines[0] == lines[1]
    assert str(scene / "transforms.json") in lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "rays").exists() and not (tmp_path / "work" / "mlflow.db").exists()


def test_bad_lens_stops_the_real_command_before_ray(tmp_path):
    scene = small_scene(tmp_path / "scene", k1=-3.0)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "pipelines/city_nerf.py", *city_args(scene, tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "frame 0 (v0.png): lens OPENCV k1=-3 is not invertible" in errors[0]
    assert "Traceback" not in proc.stderr and "Started a local Ray" not in proc.stderr
