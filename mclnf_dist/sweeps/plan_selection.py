"""Choosing the one adaptation plan of a modality on validation signals, never on test ones.

Every method adapts with the same plan (:class:`~mclnf_dist.meta.adaptation.AdaptConfig`: SGD
steps at the inner-loop rate, then Adam at ``adam_lr``; the same rows per signal per step and the
same budget), so the plan must suit random and meta-learned inits, modules and one network alike.
``mclnf choose-plan --recipe image-quick`` meta-trains the shared-init (``maml``) and modular
(``mod``) inits on the meta-training signals, adapts ``random``, ``mod-random``, ``maml`` and
``mod`` with every candidate plan on the validation signals (held back from the training side of
the split; the test signals are never loaded into the search), and picks the plan with the best
mean area under the PSNR-vs-step curve over those four methods. The winner is written to a JSON
file the report shows, and is recorded by hand in the modality's recipe
(:mod:`mclnf_dist.recipes`), where the file is cited.
"""

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mclnf_dist.config import describe, parse_config
from mclnf_dist.device import pick_device
from mclnf_dist.evaluation.protocol import MethodContext, evaluate_method
from mclnf_dist.evaluation.statistics import curve_auc
from mclnf_dist.fields.stacked_mlp import init_params
from mclnf_dist.jobs.signals_config import SignalsConfig
from mclnf_dist.meta.methods import get_method
from mclnf_dist.meta.outer_loop import meta_train
from mclnf_dist.progress import ProgressLog, quiet_logs
from mclnf_dist.recipes import recipes_for
from mclnf_dist.signals.loading import default_source
from mclnf_dist.storage import write_atomic
from mclnf_dist.sweeps.targets import prepare_signals_target

SELECTION_METHODS = ("random", "mod-random", "maml", "mod")
"""One per (init, modularity) pair: the plan must serve all of them."""


@dataclass
class PlanSearch:
    """The candidate plans (every combination) and where the result goes."""

    adam_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    """Adam learning rates tried."""
    sgd_steps: tuple[int, ...] = (0, -1)
    """SGD steps at the inner-loop rate before Adam; -1 stands for ``meta.inner_steps``."""
    output: str = ""
    """The selection's JSON; empty: ``docs/results/plans/<recipe or modality>.json``."""


@dataclass
class ChoosePlanConfig:
    """``mclnf choose-plan``: a signals config (``--recipe``) and the search."""

    signals: SignalsConfig = dataclasses.field(default_factory=SignalsConfig)
    search: PlanSearch = dataclasses.field(default_factory=PlanSearch)


def main(argv: list[str]) -> None:
    """Entry point of ``mclnf choose-plan``."""
    recipes = {name: _wrapped(make) for name, make in recipes_for(SignalsConfig).items()}
    cfg = parse_config(ChoosePlanConfig, argv, description=__doc__, recipes=recipes)
    choose_plan(cfg)


def _wrapped(make):
    return lambda: ChoosePlanConfig(signals=make())


def choose_plan(cfg: ChoosePlanConfig, log: ProgressLog | None = None) -> dict:
    """Run the search; returns (and writes) ``{"winner": {...}, "candidates": [...]}``."""
    log = log or ProgressLog("choose-plan")
    signals = cfg.signals
    quiet_logs(signals.run.verbose)
    print(describe(signals), flush=True)
    device = pick_device(signals.run.device)
    prepared = prepare_signals_target(signals, log)
    train, val = prepared.train.to(device), prepared.val.to(device)
    started = time.perf_counter()
    inits = {}
    generator = torch.Generator().manual_seed(signals.run.seed)
    random_init = init_params(
        signals.field, train.in_features, train.out_features, 1, generator, device
    )
    for name in SELECTION_METHODS:
        spec = get_method(name)
        if not spec.meta_learned:
            inits[name] = random_init
            continue
        bar = log.bar(f"meta-train {name}", signals.meta.outer_steps)
        inits[name], _ = meta_train(
            spec.meta_schedule,
            signals.field,
            signals.meta,
            None,
            random_init,
            train.segment_coords(),
            train.segment_values(),
            signals.run.seed,
            lambda step, metrics, bar=bar: bar.update(1),
        )
        bar.close()
    candidates = []
    search = cfg.search
    for lr, sgd in itertools.product(search.adam_lrs, search.sgd_steps):
        sgd = signals.meta.inner_steps if sgd == -1 else sgd
        adapt = dataclasses.replace(signals.adapt, adam_lr=lr, sgd_steps=sgd)
        aucs = {}
        for name in SELECTION_METHODS:
            ctx = MethodContext(
                get_method(name), signals.field, inits[name], signals.meta, signals.fim, adapt
            )
            aucs[name] = curve_auc(evaluate_method(ctx, val).curve)
        mean = sum(aucs.values()) / len(aucs)
        candidates.append({"adam_lr": lr, "sgd_steps": sgd, "auc": aucs, "mean_auc": mean})
        log.info(
            f"plan adam_lr={lr:g}, sgd_steps={sgd}: validation AUC "
            + ", ".join(f"{k} {v:.2f}" for k, v in aucs.items())
            + f" (mean {mean:.2f} dB)"
        )
    winner = max(candidates, key=lambda c: c["mean_auc"])
    source = signals.data.source or default_source(signals.data.modality)
    result = {
        "modality": signals.data.modality,
        "source": source,
        "validation_signals": val.num_signals,
        "meta_training_signals": train.num_signals,
        "max_steps": signals.adapt.max_steps,
        "batch_size": signals.adapt.batch_size,
        "methods": list(SELECTION_METHODS),
        "winner": {"adam_lr": winner["adam_lr"], "sgd_steps": winner["sgd_steps"]},
        "candidates": candidates,
        "wall_s": time.perf_counter() - started,
    }
    name = Path(source.replace("builtin:", "")).name
    out = Path(search.output or f"docs/results/plans/{signals.data.modality}-{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=1))
    log.info(
        f"chosen plan: adam_lr={winner['adam_lr']:g}, sgd_steps={winner['sgd_steps']} "
        f"(mean validation AUC {winner['mean_auc']:.2f} dB); wrote {out}"
    )
    return result
