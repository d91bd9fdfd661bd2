"""``scene-quick``'s field settles on the scene before its rays are stored: a real capture keeps
the contraction and the proposal, a scene of objects cut out on a background keeps the box and
stratified samples, and the job stores and trains that scene in its box."""

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mclnf_dist.city.data import field_for_capture
from mclnf_dist.config import parse_config
from mclnf_dist.experiments.recipes import recipes_for, scene_quick
from mclnf_dist.jobs.city import CityExperimentConfig, run_city
from mclnf_dist.scenes.scene import check_scene, is_cut_out, load_scene


def recipe_for(root) -> tuple:
    """``scene-quick``'s field and the scene at ``root`` as the job checks it (split ``all``)."""
    return scene_quick().field, check_scene(str(root), skip_missing_images=True)


def test_a_cut_out_object_keeps_the_box_and_as_many_stratified_samples(
    blender_scene_factory, tmp_path
):
    root = blender_scene_factory(tmp_path / "object", {"train": 3, "test": 1})
    assert is_cut_out(load_scene(str(root), "train"))
    field, scene = recipe_for(root)
    assert field.contraction and field.uses_proposal and field.box_for_cut_outs
    settled = field_for_capture(field, scene)
    assert not settled.contraction and not settled.uses_proposal
    assert settled.num_samples == field.grid.proposal.samples  # 32 a ray, as the proposal drew
    assert settled.grid.grid == field.grid.grid  # the same field otherwise
    off = dataclasses.replace(field, box_for_cut_outs=False)
    assert field_for_capture(off, scene) == off


def test_a_capture_and_an_opaque_rgba_image_keep_the_contraction(
    fox_scene, blender_scene_factory, tmp_path
):
    field, scene = recipe_for(fox_scene)
    assert field_for_capture(field, scene) == field
    root = blender_scene_factory(tmp_path / "opaque", {"train": 2, "test": 1})
    for path in (root / "train").glob("*.png"):  # alpha 255 everywhere: nothing is cut out
        pixels = np.asarray(Image.open(path)).copy()
        pixels[..., 3] = 255
        Image.fromarray(pixels, "RGBA").save(path)
    assert not is_cut_out(load_scene(str(root), "train"))
    field, scene = recipe_for(root)
    assert field_for_capture(field, scene) == field


def test_the_scene_job_stores_a_cut_out_object_in_its_box(
    ray_local, blender_scene_factory, tmp_path
):
    """``--recipe scene-quick`` on a cut-out scene: box-clipped rays (``rays``, not
    ``rays-unbounded``), and results.json's config says what was trained."""
    root = blender_scene_factory(tmp_path / "object", {"train": 4, "test": 1})
    work = tmp_path / "work"
    argv = [
        "--recipe", "scene-quick", "--data.scene", str(root), "--data.downscale", "1",
        "--data.work-dir", str(work), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--methods", "random", "--adapt.max-steps", "2", "--block.steps", "4",
        "--block.batch-rays", "64", "--block.probe-rays", "64", "--render-views", "1",
        "--data.fit-rays-per-block", "128", "--data.score-rays-per-block", "64",
    ]  # fmt: skip
    recipes = recipes_for(CityExperimentConfig)
    report = run_city(parse_config(CityExperimentConfig, argv, recipes=recipes))
    assert (work / "rays" / "train").is_dir() and not (work / "rays-unbounded").exists()
    saved = json.loads((Path(report["run_folder"]) / "results.json").read_text())
    field = saved["config"]["field"]
    assert field["contraction"] is False and field["grid"]["proposal"]["samples"] == 0
    assert field["num_samples"] == 32
