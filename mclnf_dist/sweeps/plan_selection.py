"""Choosing the one adaptation plan of a modality (or of the city) on validation data, never on
test data.

Every method adapts with the same plan (:class:`~mclnf_dist.meta.adaptation.AdaptConfig`: SGD
steps at the inner-loop rate, then Adam at ``adam_lr``; the same rows per signal per step and the
same budget), so the plan must suit random and meta-learned inits, modules and one network alike.
``mclnf choose-plan --recipe image-quick`` (or ``--recipe city-demo-quick``) meta-trains the
inits of ``maml`` and ``mod`` on the meta-training data, adapts ``random``, ``mod-random``,
``maml`` and ``mod`` with every candidate plan on the validation data, and picks the plan with the
best mean area under the PSNR-vs-step curve over those four methods. Data and meta-training are
the sweeps' (:mod:`mclnf_dist.sweeps.targets`), so nothing here sees test data:

* signals: validation is a fifth of the training side of the split (the test signals are never
  loaded into the search);
* city: meta-training streams the meta blocks' rays that cross no other block, as the city job
  does; validation adapts to the held-out blocks on training-view rays and scores OTHER pixels of
  the training views (the held-out views are the city's test images).

The winner is written to a JSON file the report shows, and is recorded by hand in the recipe
(:mod:`mclnf_dist.experiments.recipes`, or the city config's default), where the file is cited.
"""

import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from mclnf_dist.config import describe, parse_config, pop_option
from mclnf_dist.device import pick_device
from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.protocol import MethodContext, evaluate_method
from mclnf_dist.evaluation.statistics import curve_auc
from mclnf_dist.experiments.city_config import CityExperimentConfig
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.experiments.signals_config import SignalsConfig
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.methods import InitKey, get_method
from mclnf_dist.meta.outer_loop import LocalStore, meta_train_loop
from mclnf_dist.nerf.sampling import seeded_jitter
from mclnf_dist.progress import ProgressLog, quiet_logs
from mclnf_dist.signals.loading import default_source
from mclnf_dist.storage import write_atomic
from mclnf_dist.sweeps.space import get_path
from mclnf_dist.sweeps.targets import MetaTask, pipelines

SELECTION_METHODS = ("random", "mod-random", "maml", "mod")
"""One per (init, modularity) pair: the plan must serve all of them."""


@dataclass
class PlanSearch:
    """The candidate plans (every combination) and where the result goes."""

    adam_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    """Adam learning rates tried."""
    sgd_steps: tuple[int, ...] = (0, -1)
    """SGD steps at the inner-loop rate before Adam; -1 stands for ``meta.inner_steps``."""
    methods: tuple[str, ...] = SELECTION_METHODS
    """The methods whose mean validation AUC picks the winner; e.g. ``ewc`` alone to choose
    its penalty weight (with ``ewc_lambdas``) at the modality's plan."""
    ewc_lambdas: tuple[float, ...] = ()
    """EWC penalty weights tried (``adapt.ewc_lambda``); empty: the config's only."""
    output: str = ""
    """The selection's JSON; empty: ``docs/results/plans/<modality>-<data>.json``."""


Experiment = TypeVar("Experiment", SignalsConfig, CityExperimentConfig)


@dataclass
class ChoosePlanConfig(Generic[Experiment]):
    """``mclnf choose-plan``: an experiment's config (``--recipe``: a signals or a city recipe,
    under ``--experiment.``) and the search."""

    experiment: Experiment
    search: PlanSearch = dataclasses.field(default_factory=PlanSearch)


def city_search() -> PlanSearch:
    """Radiance fields train at larger Adam rates than signals (1e-2 won on the demo city:
    ``docs/results/plans/city-demo.json``)."""
    return PlanSearch(adam_lrs=(1e-3, 3e-3, 1e-2, 3e-2))


def plan_config(experiment: SignalsConfig | CityExperimentConfig) -> ChoosePlanConfig:
    """The search for ``experiment`` with its kind's default candidates."""
    city = isinstance(experiment, CityExperimentConfig)
    return ChoosePlanConfig(experiment, city_search() if city else PlanSearch())


def main(argv: list[str]) -> None:
    """Entry point of ``mclnf choose-plan``: the recipe names the experiment."""
    city = pop_option(list(argv), "--recipe") in recipes_for(CityExperimentConfig)
    target = CityExperimentConfig if city else SignalsConfig
    recipes = {name: _wrapped(make) for name, make in recipes_for(target).items()}
    cfg = parse_config(
        ChoosePlanConfig[target], argv, __doc__, recipes, default=plan_config(target())
    )
    choose_plan(cfg)


def _wrapped(make: Callable[[], Any]) -> Callable[[], ChoosePlanConfig]:
    return lambda: plan_config(make())


def choose_plan(cfg: ChoosePlanConfig, log: ProgressLog | None = None) -> dict:
    """Run the search; returns (and writes) ``{"winner": {...}, "candidates": [...]}``."""
    log = log or ProgressLog("choose-plan")
    target = cfg.experiment
    city = isinstance(target, CityExperimentConfig)
    pipeline = pipelines()["city" if city else "signals"]
    if target.param_match:
        raise MclnfError(
            "--experiment.param-match: choose-plan adapts the module-sized networks; choose the "
            "plan without it (the plan then serves the parameter-matched runs too)"
        )
    quiet_logs(target.run.verbose)
    print(describe(target), flush=True)
    device = pick_device(target.run.device)
    prepared = pipeline.prepare(target, log)
    started = time.perf_counter()
    search = cfg.search
    tasks = {name: prepared.task(target, device, get_method(name)) for name in search.methods}
    inits: dict[InitKey, Params] = {}
    for task in tasks.values():
        key = task.init_key()
        if key not in inits:
            inits[key] = meta_trained(task, get_path(target, pipeline.budget_key), log)
    candidates = []
    ewc_lambdas = search.ewc_lambdas or (target.adapt.ewc_lambda,)
    for lr, sgd, ewc in itertools.product(search.adam_lrs, search.sgd_steps, ewc_lambdas):
        sgd = target.meta.inner_steps if sgd == -1 else sgd
        adapt = dataclasses.replace(target.adapt, adam_lr=lr, sgd_steps=sgd, ewc_lambda=ewc)
        aucs = {}
        for name, task in tasks.items():
            init = inits[task.init_key()]
            seed = target.run.seed + 1  # the validation's own minibatch and jitter streams
            ctx = MethodContext(
                task.spec, task.field, init, target.meta, target.fim, adapt, seed=seed
            )
            aucs[name] = curve_auc(evaluate_method(ctx, task.fit, None, task.score).curve)
        mean = sum(aucs.values()) / len(aucs)
        plan = {"adam_lr": lr, "sgd_steps": sgd}
        if search.ewc_lambdas:
            plan["ewc_lambda"] = ewc
        candidates.append({**plan, "auc": aucs, "mean_auc": mean})
        log.info(
            "plan "
            + ", ".join(f"{k}={v:g}" for k, v in plan.items())
            + ": validation AUC "
            + ", ".join(f"{k} {v:.2f}" for k, v in aucs.items())
            + f" (mean {mean:.2f} dB)"
        )
    winner = max(candidates, key=lambda c: c["mean_auc"])
    any_task = next(iter(tasks.values()))
    if city:
        scene = Path(target.data.scene)  # a folder or its transforms file
        data = (scene.parent if scene.suffix == ".json" else scene).name or "demo"
        name, sizes = f"city-{data}", {"validation_blocks": any_task.fit.num_segments}
    else:
        source = target.data.source or default_source(target.data.modality)
        name = f"{target.data.modality}-{Path(source.replace('builtin:', '')).name}"
        sizes = {
            "source": source,
            "validation_signals": prepared.val.num_signals,
            "meta_training_signals": prepared.train.num_signals,
        }
    result = {
        "modality": "city" if city else target.data.modality,
        **sizes,
        "meta_rounds": get_path(target, pipeline.budget_key),
        "max_steps": target.adapt.max_steps,
        "batch_size": target.adapt.batch_size,
        "methods": list(search.methods),
        "inits": sorted(str(key) for key in inits),
        "winner": {k: v for k, v in winner.items() if k not in ("auc", "mean_auc")},
        "candidates": candidates,
        "wall_s": time.perf_counter() - started,
    }
    suffix = "" if tuple(search.methods) == SELECTION_METHODS else "-" + "-".join(search.methods)
    out = Path(search.output or f"docs/results/plans/{name}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=1))
    log.info(
        "chosen: "
        + ", ".join(f"{k}={v:g}" for k, v in result["winner"].items())
        + f" (mean validation AUC {winner['mean_auc']:.2f} dB); wrote {out}"
    )
    return result


def meta_trained(task: MetaTask, rounds: int, log: ProgressLog) -> Params:
    """``theta_0`` of ``task``'s method: random, or meta-trained for ``rounds`` in this process
    on the task's episodes (as a sweep trial does, without validating)."""
    cfg = task.cfg
    if not task.spec.meta_learned:
        return task.init()
    store = LocalStore(task.init(), cfg.meta.outer_lr, cfg.meta.grad_clip)
    episodes = task.episodes(torch.Generator().manual_seed(cfg.run.seed), 0)
    bar = log.bar(f"meta-train {task.init_key()}", rounds)
    with seeded_jitter(task.seed):
        meta_train_loop(
            task.field, cfg.meta, task.fim, store, episodes, rounds, lambda *_: bar.update(1)
        )
    bar.close()
    return store.params()
