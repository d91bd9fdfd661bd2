"""``mclnf choose-plan``: the one adaptation plan is chosen on validation signals only."""

import json

import pytest
import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.recipes import recipe
from mclnf_dist.experiments.signals_config import load_data
from mclnf_dist.sweeps.plan_selection import ChoosePlanConfig, PlanSearch, choose_plan, main


def test_the_plan_with_the_best_mean_validation_auc_wins_and_test_signals_stay_out(tmp_path):
    signals = recipe("image-tiny")
    signals.data.num_train, signals.data.num_test = 10, 4
    signals.adapt.max_steps = 16
    search = PlanSearch(adam_lrs=(1e-5, 1e-3), sgd_steps=(0,), output=str(tmp_path / "p.json"))
    result = choose_plan(ChoosePlanConfig(signals, search))
    assert json.loads((tmp_path / "p.json").read_text())["winner"] == result["winner"]
    means = {c["adam_lr"]: c["mean_auc"] for c in result["candidates"]}
    assert result["winner"]["adam_lr"] == max(means, key=means.get)
    # a learning rate of 1e-5 barely moves in 16 steps: the search must see that
    assert result["winner"]["adam_lr"] == 1e-3 and means[1e-3] > means[1e-5] + 1.0
    for cand in result["candidates"]:
        assert set(cand["auc"]) == {"random", "mod-random", "maml", "mod"}
    # validation signals come from the training side: the job's test signals never enter
    train, test = load_data(signals, torch.device("cpu"))
    assert result["validation_signals"] + result["meta_training_signals"] == train.num_signals
    assert result["validation_signals"] >= 1 and test.num_signals == 4


def test_city_plan_is_chosen_on_validation_pixels_of_the_held_out_blocks(tmp_path, ray_local):
    """The city's search runs through ``choose-plan``'s command line: one meta-training serves
    ``maml`` and ``mod`` (as in the city job), validation adapts to the held-out blocks only."""
    out = tmp_path / "city.json"
    main(
        [
            "--recipe",
            "city-demo-tiny",
            "--experiment.data.work-dir",
            str(tmp_path / "city"),
            "--experiment.adapt.max-steps",
            "8",
            "--search.adam-lrs",
            "1e-6",
            "1e-2",
            "--search.sgd-steps",
            "0",
            "--search.output",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["modality"] == "city" and result["inits"] == ["mse", "random"]
    assert result["validation_blocks"] == 2  # the 2x2 tiny city meta-trains on 2, holds out 2
    means = {c["adam_lr"]: c["mean_auc"] for c in result["candidates"]}
    assert result["winner"]["adam_lr"] == max(means, key=means.get) == 1e-2
    assert means[1e-2] > means[1e-6] + 0.5  # 1e-6 barely moves a radiance field in 8 steps


def test_param_match_is_refused_before_any_work(tmp_path):
    signals = recipe("image-tiny")
    signals.param_match = True
    search = PlanSearch(output=str(tmp_path / "p.json"))
    with pytest.raises(MclnfError, match="--experiment.param-match: choose-plan adapts the module"):
        choose_plan(ChoosePlanConfig(signals, search))
    assert not (tmp_path / "p.json").exists()


def test_ewc_penalty_weight_is_chosen_on_validation_for_ewc_alone(tmp_path):
    """``--search.methods ewc --search.ewc-lambdas ...``: EWC's weight is a default chosen on
    validation signals like the plan; an enormous weight pins the network to the first segment,
    so later segments (and the AUC) suffer and the search must see it."""
    signals = recipe("image-tiny")
    signals.data.num_train, signals.data.num_test = 10, 4
    signals.adapt.max_steps = 16
    search = PlanSearch(
        adam_lrs=(1e-2,),
        sgd_steps=(0,),
        methods=("ewc",),
        ewc_lambdas=(0.0, 1e9),
        output=str(tmp_path / "ewc.json"),
    )
    result = choose_plan(ChoosePlanConfig(signals, search))
    assert result["methods"] == ["ewc"] and result["inits"] == ["random"]
    means = {c["ewc_lambda"]: c["mean_auc"] for c in result["candidates"]}
    assert all(set(c["auc"]) == {"ewc"} for c in result["candidates"])
    assert result["winner"] == {"adam_lr": 1e-2, "sgd_steps": 0, "ewc_lambda": 0.0}
    assert means[0.0] > means[1e9] + 0.5
