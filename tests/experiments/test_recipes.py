"""Named recipes: every one builds and validates, flags and YAML override them, and they hold
the budgets the old modality/report defaults resolved to (so no figure changes)."""

import pytest

from mclnf_dist.config import check_config, load_yaml_config, parse_config
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.recipes import RECIPES, recipe, recipes_for
from mclnf_dist.jobs.city import CityExperimentConfig
from mclnf_dist.jobs.signals import SignalsConfig
from mclnf_dist.meta.methods import METHODS

SIGNALS = recipes_for(SignalsConfig)
CITY = recipes_for(CityExperimentConfig)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_builds_a_valid_fresh_config(name):
    cfg = recipe(name)
    check_config(cfg)
    assert cfg is not recipe(name) and cfg == recipe(name)


def test_every_base_recipe_has_quick_tiny_and_full_budgets():
    for base in ("image", "photos", "audio", "video", "city-demo", "scene"):
        assert {base, f"{base}-quick", f"{base}-tiny", f"{base}-full"} <= set(RECIPES)
    assert set(SIGNALS) | set(CITY) == set(RECIPES)


def test_no_recipe_means_the_defaults_of_the_readme_commands():
    assert parse_config(SignalsConfig, [], recipes=SIGNALS) == recipe("image") == SignalsConfig()
    city = parse_config(CityExperimentConfig, [], recipes=CITY)
    assert city == recipe("city-demo") == CityExperimentConfig()
    assert (city.meta.outer_steps, city.adapt.max_steps, city.methods) == (
        300,
        64,
        ("random", "mod-random", "maml", "mod", "mim"),
    )


@pytest.mark.parametrize(
    "name,modality,split,meta_batch,outer_steps,max_steps",
    [
        ("image", "image", (80, 20), 8, 300, 4096),
        ("audio", "audio", (32, 8), 3, 300, 1024),
        ("video", "video", (12, 4), 2, 300, 256),
        ("image-quick", "image", (80, 12), 8, 100, 32),
        ("photos-quick", "image", (32, 12), 4, 60, 128),
        ("audio-quick", "audio", (12, 3), 3, 60, 128),
        ("video-quick", "video", (8, 4), 2, 40, 64),
        ("audio-tiny", "audio", (4, 2), 2, 2, 2),
        ("video-full", "video", (12, 4), 2, 300, 4096),
    ],
)
def test_signal_recipes_hold_their_budgets(
    name, modality, split, meta_batch, outer_steps, max_steps
):
    cfg = recipe(name)
    assert cfg.data.modality == modality
    assert (cfg.data.num_train, cfg.data.num_test) == split
    assert (cfg.meta.meta_batch_size, cfg.meta.outer_steps) == (meta_batch, outer_steps)
    assert cfg.adapt.max_steps == max_steps


def test_city_recipes_hold_their_report_budgets():
    quick = recipe("city-demo-quick")
    assert (quick.meta.outer_steps, quick.block.steps, quick.render_views) == (40, 32, 2)
    assert (quick.adapt.max_steps, quick.score_views) == (32, 12)
    default = CityExperimentConfig().adapt  # the one plan, chosen at the quick budget
    assert (quick.adapt.adam_lr, quick.adapt.sgd_steps) == (default.adam_lr, default.sgd_steps)
    assert recipe("city-demo-full").adapt.max_steps == 256
    tiny = recipe("city-demo-tiny")
    assert (tiny.data.blocks_x, tiny.data.blocks_y, tiny.data.image_size) == (2, 2, 24)
    assert (tiny.train.num_workers, tiny.meta.outer_steps, tiny.train.rays_per_task) == (1, 2, 64)
    assert (tiny.adapt.max_steps, tiny.adapt.batch_size, tiny.render_views, tiny.workers) == (
        2,
        64,
        1,
        1,
    )


def test_a_flag_overrides_the_recipe():
    cfg = parse_config(
        SignalsConfig, ["--recipe", "audio-quick", "--meta.inner-steps", "8"], recipes=SIGNALS
    )
    assert cfg.data.modality == "audio" and cfg.meta.outer_steps == 60  # the recipe
    assert cfg.meta.inner_steps == 8  # the flag
    cfg = parse_config(SignalsConfig, ["--recipe=video", "--seed", "2"], recipes=SIGNALS)
    assert cfg.data.modality == "video" and cfg.run.seed == 2


def test_the_signals_modality_flag_is_short_for_its_recipe(monkeypatch):
    from mclnf_dist.jobs import signals

    seen = []
    monkeypatch.setattr(signals, "run_signals", seen.append)
    signals.main(["--modality", "audio", "--adapt.max-steps", "256"])
    assert seen[0].data.modality == "audio" and seen[0].meta.meta_batch_size == 3
    assert seen[0].adapt.max_steps == 256
    with pytest.raises(MclnfError, match="give one of them"):
        signals.main(["--modality", "audio", "--recipe", "video"])


def test_a_yaml_names_a_recipe_as_its_base(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: video-quick\nmeta: {inner_steps: 3}\n")
    cfg = load_yaml_config(SignalsConfig, str(path), SIGNALS)
    assert cfg.data.modality == "video" and cfg.adapt.max_steps == 64 and cfg.meta.inner_steps == 3
    cfg = parse_config(
        SignalsConfig, ["--config", str(path), "--adapt.max-steps", "9"], recipes=SIGNALS
    )
    assert cfg.meta.inner_steps == 3 and cfg.adapt.max_steps == 9  # flags last
    with pytest.raises(MclnfError, match="differs from --recipe audio"):
        parse_config(SignalsConfig, ["--recipe", "audio", "--config", str(path)], recipes=SIGNALS)
    path.write_text("recipe: city-demo\n")
    with pytest.raises(MclnfError, match=r"c.yaml: recipe: unknown recipe 'city-demo'"):
        load_yaml_config(SignalsConfig, str(path), SIGNALS)


def test_the_report_builds_each_section_from_its_recipe(tmp_path):
    from mclnf_dist.jobs.report import SECTIONS, ReportConfig, section_config
    from mclnf_dist.run_settings import RunSettings

    cfg = ReportConfig(quick=True, work_dir=str(tmp_path), run=RunSettings(seed=5, experiment="r"))
    by_name = {s.name: section_config(s, cfg, 5) for s in SECTIONS}
    assert by_name["photos"].data.source == "builtin:photos"
    assert (by_name["photos"].data.size, by_name["audio"].data.length) == ((96, 96), 16000)
    assert by_name["audio"].adapt.max_steps == 128 and by_name["audio"].meta.outer_steps == 60
    assert by_name["photos"].adapt.batch_size == 2048  # rows per signal per step
    assert by_name["city"].run_name == "report-quick-seed-5" and by_name["city"].run.seed == 5
    assert all(len(c.methods) == len(METHODS) and c.run.experiment == "r" for c in by_name.values())
    full = section_config(SECTIONS[2], ReportConfig(), 0)
    assert full.adapt.max_steps == 4096 and full.meta.meta_batch_size == 3
