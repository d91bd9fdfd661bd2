"""Extending a saved city model with new captures (a new area): only the new blocks train, the
model's own blocks stay bit-identical, and the result is a model of both areas."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mclnf_dist.city.init_asset import save_init
from mclnf_dist.city.model import load_city_model, save_city_model
from mclnf_dist.config import parse_config
from mclnf_dist.errors import MclnfError
from mclnf_dist.jobs.city import CityExperimentConfig, run_city
from mclnf_dist.nerf.field import field_for_scene, init_radiance_params
from mclnf_dist.runs import COMPLETE
from mclnf_dist.scenes.demo_city import CityConfig, make_city
from mclnf_dist.scenes.partition import BlockPartition, load_partition
from mclnf_dist.scenes.scene import load_scene


def half_scene(city_root: Path, out: Path, west: bool) -> str:
    """The cameras of the city's western (or eastern) half, as a scene of their own."""
    meta = json.loads((city_root / "transforms.json").read_text())
    xs = [f["transform_matrix"][0][3] for f in meta["frames"]]
    middle = float(np.median(xs))
    frames = [f for f, x in zip(meta["frames"], xs, strict=True) if (x < middle) == west]
    names = {f["file_path"] for f in frames}
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        meta[key] = [n for n in meta[key] if n in names]
    meta["frames"] = frames
    out.mkdir(parents=True)
    (out / "images").symlink_to(city_root / "images")  # frame paths stay inside the scene
    (out / "transforms.json").write_text(json.dumps(meta))
    return str(out)


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[str, str, np.ndarray]:
    """(west half scene, east half scene, the whole city's box) of a small generated city."""
    root = tmp_path_factory.mktemp("halves")
    config = CityConfig(blocks_x=2, blocks_y=1, width=16, height=16, holdout_every=3)
    city_root = Path(make_city(str(root / "city"), config))
    west = half_scene(city_root, root / "west", west=True)
    east = half_scene(city_root, root / "east", west=False)
    return west, east, load_scene(str(city_root), "all").scene_box


def west_model(folder: str, west: str, box: np.ndarray) -> tuple[dict, dict]:
    """A one-block model of the west half in ``box`` (random modules stand in for trained
    ones) and its theta_0, saved in ``folder``; returns (params, theta_0)."""
    scene = load_scene(west, "all", scene_box=box)
    field = field_for_scene(scene)
    partition = BlockPartition.from_cameras(scene.camera_centers(), 1, 1)
    params = init_radiance_params(field, 1, torch.Generator().manual_seed(1))
    save_city_model(folder, "blocks-meta", field, params, partition, [0], True)
    theta0 = init_radiance_params(field, 1, torch.Generator().manual_seed(2))
    save_init(folder, "mse", theta0, field)
    (Path(folder).parent / COMPLETE).write_text("{}")  # a completed run: --extend reads only those
    return params, theta0


def extend_args(folder: str, east: str, work: Path) -> list[str]:
    return [
        "--extend", f"{folder}/blocks-meta", "--data.scene", east, "--data.blocks-x", "1",
        "--data.blocks-y", "1", "--data.work-dir", str(work), "--block.steps", "6",
        "--block.batch-rays", "128", "--block.probe-rays", "128", "--run-name", "extend",
    ]  # fmt: skip


def test_extend_trains_only_new_blocks(halves, tmp_path, ray_local, mlflow_uri):
    west, east, box = halves  # the whole city's box: the model will grow into it
    folder = str(tmp_path / "west_run" / "city_model")
    params, theta0 = west_model(folder, west, box)
    argv = [*extend_args(folder, east, tmp_path / "east_run"), "--tracking-uri", mlflow_uri]
    report = run_city(parse_config(CityExperimentConfig, argv))

    out = str(Path(report["run_folder"]) / "city_model")
    assert out.startswith(str(tmp_path / "east_run" / "runs" / "extend"))
    extended = load_city_model(out, "blocks-meta")
    assert extended.block_order == [0, 1]
    assert len(load_partition(out).centroids) == 2
    for key in params:
        assert torch.equal(extended.params[key][:1], params[key])  # the old block, bit-identical
    moved = max(float((extended.params[k][1:] - theta0[k]).abs().max()) for k in theta0)
    assert moved > 0  # the new block trained from theta_0
    assert report["kept_blocks"] == [0] and report["inits"]["meta"]["heldout_image_psnr"] > 0


def test_extend_refuses_captures_outside_the_box(halves, tmp_path, ray_local, mlflow_uri):
    west, east, box = halves
    low, high = np.array(box, dtype=np.float64)
    high[0] = (low[0] + high[0]) / 2  # a box of the west half only: the east lies outside
    folder = str(tmp_path / "model" / "city_model")
    west_model(folder, west, np.stack([low, high]))
    argv = [*extend_args(folder, east, tmp_path / "out"), "--tracking-uri", mlflow_uri]
    with pytest.raises(MclnfError, match="reaches outside the model's scene box"):
        run_city(parse_config(CityExperimentConfig, argv))


def test_extend_reads_only_completed_runs(halves, tmp_path):
    west, east, box = halves
    folder = tmp_path / "work" / "runs" / "w" / "20260101-000000-abcd" / "city_model"
    west_model(str(folder), west, box)
    (folder.parent / COMPLETE).unlink()  # the run was interrupted: not a model to build on
    argv = extend_args(str(folder), east, tmp_path / "out")
    with pytest.raises(MclnfError, match="did not complete"):
        run_city(parse_config(CityExperimentConfig, argv))
    with pytest.raises(MclnfError, match="no completed run"):
        run_city(
            parse_config(CityExperimentConfig, ["--extend", str(tmp_path / "work"), *argv[2:]])
        )


def test_extend_refuses_a_capture_of_another_world(halves, fox_scene, tmp_path, mlflow_uri):
    """The fox figurine (a real capture, a few units across) sits inside the demo city's box by
    accident of its coordinates: refused from its cameras, before Ray, ingest or any training."""
    import ray

    west, _, box = halves
    folder = str(tmp_path / "model" / "city_model")
    west_model(folder, west, box)
    was_running = ray.is_initialized()
    argv = [*extend_args(folder, str(fox_scene), tmp_path / "out"), "--data.downscale", "8"]
    with pytest.raises(MclnfError) as caught:
        run_city(parse_config(CityExperimentConfig, [*argv, "--tracking-uri", mlflow_uri]))
    message = str(caught.value)
    assert message.startswith(f"{fox_scene}: its cameras spread ") and "\n" not in message
    assert "of the model's block side" in message and "expected at least 0.1" in message
    assert ray.is_initialized() == was_running and not (tmp_path / "out" / "rays").exists()


def test_same_world_checks_name_the_number_and_threshold(halves):
    from mclnf_dist.city.world import check_same_world

    west, east, box = halves
    scene = load_scene(east, "all")
    partition = BlockPartition.from_cameras(load_scene(west, "all").camera_centers(), 1, 1)
    check_same_world(scene, box, partition, "east")  # the city's other half: the same world
    far = np.asarray(box, dtype=np.float64) + [[900.0, 0, 0], [900.0, 0, 0]]
    with pytest.raises(MclnfError, match=r"^east: 0% of its cameras stand over .*at least 90%"):
        check_same_world(scene, far, partition, "east")
    tiny = np.asarray(box, dtype=np.float64) / 100.0  # a model in other units (hectometres)
    small = BlockPartition.from_cameras(load_scene(west, "all").camera_centers() / 100.0, 1, 1)
    with pytest.raises(MclnfError, match=r"^east: its cameras spread .* times the model box"):
        check_same_world(scene, tiny, small, "east")
