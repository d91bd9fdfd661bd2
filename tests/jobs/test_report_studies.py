"""The report's tables of the studies that chose its settings on validation data."""

import json

from mclnf_dist.jobs.report_studies import plan_study_markdown


def study(winner: dict, candidates: list[dict]) -> dict:
    return {
        "modality": "audio",
        "methods": ["ewc"],
        "meta_training_signals": 10,
        "validation_signals": 2,
        "max_steps": 16,
        "batch_size": 64,
        "winner": winner,
        "candidates": candidates,
    }


def test_an_ewc_study_marks_only_the_chosen_weight(tmp_path):
    """A plan study's keys come from its winner: the EWC study's rows differ only in
    ``ewc_lambda``, and exactly the winning weight is marked."""
    plan = {"adam_lr": 1e-3, "sgd_steps": 4}
    candidates = [
        {**plan, "ewc_lambda": lam, "auc": {"ewc": auc}, "mean_auc": auc}
        for lam, auc in ((0.1, 19.2), (10.0, 19.9), (100.0, 19.5))
    ]
    path = tmp_path / "audio-clips-ewc.json"
    path.write_text(json.dumps(study({**plan, "ewc_lambda": 10.0}, candidates)))
    lines = "\n".join(plan_study_markdown(tmp_path)).splitlines()
    header = next(line for line in lines if line.startswith("| adam_lr"))
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "adam_lr",
        "sgd_steps",
        "ewc_lambda",
        "ewc",
        "mean AUC",
    ]
    chosen = [line for line in lines if "**chosen**" in line]
    assert len(chosen) == 1 and "| 10 " in chosen[0] and "19.90" in chosen[0]
