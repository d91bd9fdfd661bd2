"""The city's continual phase is scored as users get the city: full held-out images rendered
through the routed city model; ``mod-random`` runs in the city; ``--param-match`` widens the one
network to the modules' total size."""

import socket
import time
from pathlib import Path

import pytest
import torch

from mclnf_dist.city.model import load_city_model, preview_checkpoints, watched_params
from mclnf_dist.evaluation.city_images import score_city_images, spread_views
from mclnf_dist.experiments.recipes import recipe
from mclnf_dist.jobs.city import run_city
from mclnf_dist.jobs.view import CityViewer, ViewConfig
from mclnf_dist.runs import COMPLETE
from mclnf_dist.scenes.partition import load_partition
from mclnf_dist.scenes.scene import Scene, load_scene


@pytest.mark.timeout(900)
def test_city_methods_are_scored_on_the_rendered_held_out_images(ray_local, tmp_path):
    cfg = recipe("city-demo-tiny")
    cfg.data.work_dir = str(tmp_path)
    cfg.methods, cfg.param_match = ("random", "mod-random"), True
    cfg.adapt.max_steps, cfg.adapt.adam_lr = 8, 1e-2
    cfg.run_name = f"score{time.time_ns()}"
    cfg.run.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = run_city(cfg)
    results = {r["method"]: r for r in report["results"]}
    # the one network is as large as the four modules together (within one hidden unit's worth)
    modules, one = (
        results["mod-random"]["params_per_signal"],
        results["random"]["params_per_signal"],
    )
    assert 0.9 * modules <= one <= modules
    # the last checkpoint's PSNR is exactly the saved city model's score on the held-out images
    model_dir = Path(report["run_folder"]) / "city_model"
    for name in ("random", "mod-random"):
        model = load_city_model(str(model_dir), name)
        test = load_scene(model.scene["root"], "test", **model.scene["options"])
        partition = load_partition(str(model_dir))
        scores = score_city_images(model.field, model.params, model.route, partition, test, None)
        assert results[name]["psnr_last"] == pytest.approx(scores.psnr, abs=1e-3)
    # mclnf view --watch: the preview with every block checkpoint in place is the final model,
    # and a block whose checkpoint has not landed yet still shows the init
    final = load_city_model(str(model_dir), "blocks-random").params
    watched, landed = watched_params(str(model_dir), "preview-random")
    assert sorted(landed) == sorted(watched.block_order)
    for key, value in final.items():
        torch.testing.assert_close(watched.params[key], value)
    first = watched.block_order[0]
    checkpoint = Path(
        preview_checkpoints(str(model_dir), "preview-random"), f"block-{first:04d}.pt"
    )
    kept = checkpoint.read_bytes()
    checkpoint.unlink()
    partial, landed = watched_params(str(model_dir), "preview-random")
    preview = load_city_model(str(model_dir), "preview-random").params
    assert first not in landed
    for key, value in preview.items():
        torch.testing.assert_close(partial.params[key][0], value[0])
        torch.testing.assert_close(partial.params[key][1:], final[key][1:])
    # the viewer follows the run as if it were still training: the checkpoint lands, it reloads
    (model_dir.parent / COMPLETE).unlink()
    cfg = ViewConfig(model=str(model_dir.parent), watch=True, watch_s=0.2, port=free_port())
    viewer = CityViewer(cfg)
    try:
        assert viewer.model_file.name == "preview-random.pt"
        key = next(iter(final))
        torch.testing.assert_close(viewer.model.params[key][0], preview[key][0])
        time.sleep(0.05)
        checkpoint.write_bytes(kept)
        deadline = time.time() + 30
        while time.time() < deadline and not torch.equal(
            viewer.model.params[key][0], final[key][0]
        ):
            time.sleep(0.1)
        torch.testing.assert_close(viewer.model.params[key][0], final[key][0])
    finally:
        viewer.stop()
    # and it learned: the modules' PSNR after 8 steps is well above after 1
    curve = results["mod-random"]["curve"]
    assert curve["8"] > curve["1"] + 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_score_views_are_spread_over_the_held_out_split():
    """``score_views`` renders fewer held-out views per checkpoint, from every part of the split
    (views are ordered by block in the demo city), and 0 keeps them all."""
    scene = Scene(root="", split="test", frames=list(range(37)), near=0.1, far=1.0)
    assert spread_views(scene, 12).frames == [0, 3, 7, 10, 13, 16, 20, 23, 26, 29, 33, 36]
    assert spread_views(scene, 0).frames == spread_views(scene, 40).frames == list(range(37))
    assert len(set(spread_views(scene, 12).frames)) == 12
