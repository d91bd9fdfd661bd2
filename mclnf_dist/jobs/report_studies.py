"""The studies behind the report's settings, shown beside its results: how each modality's one
adaptation plan was chosen (``mclnf choose-plan``) and how the FIM loss was swept (``mclnf
sweep``), both on validation data. They run apart from the report (they choose settings the
recipes then record), so the report reads their saved results and says where they came from."""

import json
from pathlib import Path

from mclnf_dist.evaluation.tables import format_table

PLANS_DIR = Path("docs/results/plans")
"""Where ``mclnf choose-plan`` writes one JSON per modality/data set."""


def plan_study_markdown(folder: Path = PLANS_DIR) -> list[str]:
    """A table per data set of every candidate plan's validation AUC, the winner marked."""
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        return []
    lines = [
        "## How the adaptation plan was chosen",
        "",
        "Every method adapts with one plan per modality: `sgd_steps` plain-SGD steps at the "
        "inner-loop rate, then Adam at `adam_lr`, the same rows per signal per step and the same "
        "budget. The plan was chosen by `mclnf choose-plan --recipe <modality>-quick` on "
        "validation signals held back from the training side of the split (the test signals are "
        "not loaded; for the city: pixels of the training views, never the held-out views), as "
        "the best mean area under the PSNR-vs-log-step curve (AUC, dB) of `random`, "
        "`mod-random`, `maml` and `mod`, and is recorded in the recipes (the city's: in its "
        "config's defaults). EWC's penalty weight `ewc_lambda` was chosen the same way, for "
        "`ewc` alone at the modality's plan (`--search.methods ewc --search.ewc-lambdas ...`, "
        "the `*-ewc` tables), and is the default of every recipe.",
        "",
    ]
    for path in files:
        study = json.loads(path.read_text())
        methods = study["methods"]
        winner = study["winner"]  # the plan's keys (and ``ewc_lambda`` in an EWC study)
        rows = []
        for cand in study["candidates"]:
            chosen = all(cand[key] == value for key, value in winner.items())
            rows.append(
                [
                    *(f"{cand[key]:g}" for key in winner),
                    *(f"{cand['auc'][m]:.2f}" for m in methods),
                    f"{cand['mean_auc']:.2f}" + (" **chosen**" if chosen else ""),
                ]
            )
        if "validation_blocks" in study:  # the city
            data = (
                f"{study['meta_rounds']} meta-rounds; validation: training-view pixels of the "
                f"{study['validation_blocks']} held-out blocks that the adaptation does not fit"
            )
        else:
            data = (
                f"{study['meta_training_signals']} meta-training / "
                f"{study['validation_signals']} validation signals"
            )
        lines += [
            f"**{path.stem}**: {data}, {study['max_steps']} steps, "
            f"batch {study['batch_size'] or 'all rows'} per "
            + ("block" if "validation_blocks" in study else "signal"),
            "",
            format_table([*winner, *methods, "mean AUC"], rows),
            "",
        ]
    return lines
