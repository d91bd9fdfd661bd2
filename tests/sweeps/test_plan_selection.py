"""``mclnf choose-plan``: the one adaptation plan is chosen on validation signals only."""

import json

import torch

from mclnf_dist.jobs.signals import load_data
from mclnf_dist.recipes import recipe
from mclnf_dist.sweeps.plan_selection import ChoosePlanConfig, PlanSearch, choose_plan


def test_the_plan_with_the_best_mean_validation_auc_wins_and_test_signals_stay_out(tmp_path):
    signals = recipe("image-tiny")
    signals.data.num_train, signals.data.num_test = 10, 4
    signals.adapt.max_steps = 16
    search = PlanSearch(adam_lrs=(1e-5, 1e-3), sgd_steps=(0,), output=str(tmp_path / "p.json"))
    result = choose_plan(ChoosePlanConfig(signals=signals, search=search))
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
