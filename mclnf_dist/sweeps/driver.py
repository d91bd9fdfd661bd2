"""Hyperparameter sweeps with Ray Tune over a pipeline's meta-learning, tracked in MLflow.

``python pipelines/sweep.py --space tune_spaces/city.yaml --num-samples 8`` (or ``mclnf sweep``):
prepare the pipeline's data once, then run trials (short in-process meta-trainings that report
validation PSNR every few rounds, :mod:`mclnf_dist.sweeps.trial`) with Ray Tune: random or Optuna
search, ASHA early stopping, as many concurrent trials as the cluster has CPUs for. Every trial is
an MLflow run under the sweep's parent run. Writes ``best_config.yaml`` (load it with
``pipelines/city_nerf.py --config`` or ``pipelines/signals.py --config``), ``trials.csv``,
``results.md`` and ``val_psnr.png`` to ``<work_dir>/sweeps/<name>/``. Re-running the same command
resumes an interrupted sweep (finished trials are not rerun); ``--rerun best_config.yaml``
re-runs one config without Tune (the reproducibility check).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml

from mclnf_dist.config import (
    NonNegativeInt,
    PositiveInt,
    Range,
    check_config,
    parse_config,
)
from mclnf_dist.config_rules import cross_field_rule, name_problem
from mclnf_dist.errors import MclnfError
from mclnf_dist.progress import ProgressLog
from mclnf_dist.run_settings import RunField, run_settings
from mclnf_dist.runtime import ensure_ray
from mclnf_dist.sweeps.mlflow_runs import existing_run, finish_trial_runs, log_to_parent
from mclnf_dist.sweeps.report import SweepSummary, rows_from_results, write_results
from mclnf_dist.sweeps.space import SweepSpace, load_space
from mclnf_dist.sweeps.trial import TrialSettings, evaluate_config, run_trial
from mclnf_dist.tracking import Tracker, ensure_experiment, resolve_tracking_uri

Search = Literal["random", "optuna"]
SEARCHES = get_args(Search)
Scheduler = Literal["asha", "fifo"]
SCHEDULERS = get_args(Scheduler)


@dataclass
class SweepConfig:
    """A sweep: which space, how to search it, where results go."""

    space: str = ""
    """The search-space YAML file (e.g. ``tune_spaces/city.yaml``); required."""
    num_samples: PositiveInt = 8
    """Trials to sample (a ``grid`` in the space is repeated this many times)."""
    search: Search = "random"
    """``random`` (Tune's random/grid search) or ``optuna`` (TPE; no ``grid`` dists)."""
    scheduler: Scheduler = "asha"
    """``asha`` (stops trials that trail at a rung) or ``fifo`` (every trial runs its budget)."""
    grace_period: PositiveInt = 1
    """ASHA: reports (``metric.every`` rounds each) before a trial can be stopped."""
    reduction_factor: Annotated[float, Range(gt=1)] = 2.0
    """ASHA: keep the best ``1/reduction_factor`` of the trials at each rung."""
    cpus_per_trial: PositiveInt = 1
    """CPUs (and torch threads) of every trial."""
    gpus_per_trial: Annotated[float, Range(ge=0, special=((-1, "auto"),))] = -1.0
    """GPUs of every trial; a fraction packs several trials on one GPU (the fields are small:
    0.25 runs four per GPU); 0: CPU-only trials; -1: 1 if the cluster has GPUs, else 0."""
    max_concurrent_trials: NonNegativeInt = 0
    """Trials running at once; 0: as many as the cluster's CPUs (and GPUs) hold."""
    name: str = ""
    """Names the sweep (its folder, MLflow tags); empty: the space file's name. Re-running the same
    name resumes it."""
    work_dir: str = "outputs"
    """The sweep's folder is ``<work_dir>/sweeps/<name>`` (Tune's state, trial checkpoints,
    results)."""
    rerun: str = ""
    """A full config (e.g. a sweep's ``best_config.yaml``): re-run it as one trial without Tune
    and print its metrics, instead of sweeping."""
    run: RunField = run_settings("")
    """``--seed``: of the search (which configs are sampled; each trial's own seed is in its
    config); ``--experiment``: empty is ``mclnf-sweep-<name>``; ``--device``: of ``--rerun`` (auto:
    where the sweep's trials ran)."""


@cross_field_rule(SweepConfig)
def sweep_name_safe(cfg: SweepConfig, prefix: str) -> str | None:
    """The name is a folder under ``<work_dir>/sweeps``."""
    return name_problem(f"{prefix}name", cfg.name) if cfg.name else None


def main(argv: list[str]) -> None:
    """Entry point of ``pipelines/sweep.py`` and ``mclnf sweep``."""
    cfg = parse_config(SweepConfig, argv, description=__doc__)
    if cfg.rerun:
        space = load_space(require_space(cfg))
        device = cfg.run.device
        if device == "auto":
            device = "cpu" if cfg.gpus_per_trial == 0 else "auto"  # where the sweep's trials ran
        metrics = evaluate_config(cfg.rerun, space, cfg.cpus_per_trial, device=device)
        print(json.dumps(metrics, indent=1))
        return
    run_sweep(cfg)


def require_space(cfg: SweepConfig) -> str:
    if not cfg.space:
        raise MclnfError("--space is required (a YAML file such as tune_spaces/city.yaml)")
    return cfg.space


def check(cfg: SweepConfig, space: SweepSpace) -> None:
    """What the fields' own choices and ranges cannot say (they are checked by the parse)."""
    check_config(cfg)  # a config built in code skips the command line's checks
    if cfg.search == "optuna" and space.has_grid:
        raise MclnfError(
            f"{space.source}: --search optuna cannot run a grid (use --search random, or choice)"
        )


def absolute_tracking_uri(explicit: str) -> str:
    """Trials run in other folders: a relative sqlite path is made absolute here, in the driver."""
    uri = resolve_tracking_uri(explicit or None)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def sweep_identity(cfg: SweepConfig, space: SweepSpace) -> dict:
    """What must not change when a sweep of the same name is re-run (it resumes)."""
    raw = yaml.safe_load(Path(space.source).read_text())
    keys = ("num_samples", "search", "scheduler", "grace_period", "reduction_factor")
    return {"space": raw, **{k: getattr(cfg, k) for k in keys}, "seed": cfg.run.seed}


def check_identity(folder: Path, identity: dict, name: str) -> dict:
    """The sweep's record (``sweep.json``) from an earlier attempt, or a new one; a re-run with
    other settings is an error (it would resume a different sweep)."""
    file = folder / "sweep.json"
    record = json.loads(file.read_text()) if file.exists() else {}
    before = record.get("identity")
    if before is not None:
        changed = [k for k in identity if before.get(k) != identity[k]]
        if changed:
            raise MclnfError(
                f"sweep {name!r} in {folder} was started with a different {', '.join(changed)} "
                "(expected the same command to resume it; pass --name for a new sweep)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    record["identity"] = identity
    file.write_text(json.dumps(record, indent=1))
    return record


def save_record(folder: Path, record: dict) -> None:
    (folder / "sweep.json").write_text(json.dumps(record, indent=1))


def run_sweep(cfg: SweepConfig) -> SweepSummary:
    """Run (or resume) a sweep; returns a JSON-able summary."""
    import ray
    from ray import tune

    # Trials report (and checkpoint) every few seconds and num_to_keep=1 forces a state snapshot
    # each time: a deliberate trade (a resumed sweep loses nothing) Tune would warn about at
    # every report, in pages.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    space = load_space(require_space(cfg))
    check(cfg, space)
    name = cfg.name or Path(space.source).stem
    storage = Path(cfg.work_dir).resolve() / "sweeps"
    folder = storage / name
    record = check_identity(folder, sweep_identity(cfg, space), name)
    log = ProgressLog("sweep")
    ensure_ray(worker_logs=True)  # the trials' validation lines are the sweep's progress
    base = space.base_config()
    budget, reports = space.rounds(base), space.reports(base)
    prepared = space.pipeline.prepare(base, log)  # once, before any trial
    resources = trial_resources(cfg, ray.cluster_resources())
    concurrent = cfg.max_concurrent_trials or trials_that_fit(resources, ray.cluster_resources())
    tracking_uri = absolute_tracking_uri(cfg.run.tracking_uri)
    experiment = cfg.run.experiment or f"mclnf-sweep-{name}"
    experiment_id = ensure_experiment(experiment, tracking_uri)  # before trials race to create it
    parent_id = existing_run(tracking_uri, record.get("parent_run_id"))
    parent = Tracker(
        experiment,
        name,
        tracking_uri,
        tags={"sweep": name, "sweep_role": "parent", "max_concurrent_trials": str(concurrent)},
        run_id=parent_id,
    )
    record["parent_run_id"] = parent.run_id
    save_record(folder, record)
    parent.log_params(
        {
            "pipeline": space.pipeline.name,
            "space_file": space.source,
            "search": cfg.search,
            "scheduler": cfg.scheduler,
            "num_samples": cfg.num_samples,
            "grace_period": cfg.grace_period,
            "reduction_factor": cfg.reduction_factor,
            "metric": f"{space.metric.name}@{space.metric.adapt_step} every {space.metric.every}",
            "rounds": budget,
            "space": space.describe(),
            "base": space.base,
        }
    )
    settings = TrialSettings(
        name,
        space,
        experiment,
        tracking_uri,
        parent.run_id,
        threads=cfg.cpus_per_trial,
        device="cuda" if resources["gpu"] > 0 else "cpu",
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, prepared=prepared, settings=settings), resources
    )
    log.info(
        f"sweep {name}: {space.pipeline.name} pipeline, {cfg.num_samples} samples of "
        f"{len(space.params)} params, {cfg.search} search, {cfg.scheduler} scheduler, up to "
        f"{concurrent} trials at once ({resources['cpu']} CPU and {resources['gpu']:g} GPU "
        f"each), {budget} meta-rounds per trial (a report every "
        f"{space.metric.every}); {folder}; MLflow experiment {experiment!r} run {parent.run_id}"
    )
    if tune.Tuner.can_restore(str(folder)):
        log.info(f"resuming sweep {name} from {folder} (finished trials are kept)")
        tuner = tune.Tuner.restore(
            str(folder), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space.tune_space(),
            tune_config=tune.TuneConfig(
                metric=space.metric.name,
                mode="max",
                search_alg=search_algorithm(cfg, concurrent),
                scheduler=scheduler(cfg, reports),
                num_samples=cfg.num_samples,
                reuse_actors=True,  # a fresh trial process costs ~10 s on 2 busy cores
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                verbose=0,
                # a trial resumes from its last checkpoint; older ones are pruned
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    try:
        results = tuner.fit()
        rows = rows_from_results(results, budget)
        summary = write_results(cfg, space, rows, folder, name)
        finish_trial_runs(tracking_uri, experiment_id, parent.run_id, rows)
        log_to_parent(parent, rows, folder)
    except BaseException as err:
        parent.end("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    parent.end("FINISHED")
    summary["mlflow_run_id"] = parent.run_id
    summary["experiment"] = experiment
    log.info(f"wrote {folder}/best_config.yaml, results.md, trials.csv, val_psnr.png")
    return summary


def trial_resources(cfg: SweepConfig, cluster: dict[str, float]) -> dict[str, float]:
    """Every trial's Ray resources; ``gpus_per_trial=-1`` becomes 1 GPU if the cluster has any.

    A trial that asks for no GPU runs on the CPU even on a GPU node (this Ray leaves
    ``CUDA_VISIBLE_DEVICES`` alone for it), so the trial's device follows its request."""
    gpus = cfg.gpus_per_trial
    if gpus == -1:
        gpus = 1.0 if cluster.get("GPU", 0) > 0 else 0.0
    if gpus > 1 and gpus != int(gpus):
        raise MclnfError(f"--gpus-per-trial above 1 must be whole, got {gpus}")
    return {"cpu": cfg.cpus_per_trial, "gpu": gpus}


def trials_that_fit(resources: dict[str, float], cluster: dict[str, float]) -> int:
    """How many trials the cluster holds at once (at least 1: more wait for the autoscaler)."""
    fits = [
        int(cluster.get(name.upper(), 0) // need) for name, need in resources.items() if need > 0
    ]
    return max(1, min(fits))


def search_algorithm(cfg: SweepConfig, concurrent: int):
    """Seeded random/grid search or Optuna's TPE, at most ``concurrent`` trials at once."""
    if cfg.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=cfg.run.seed), max_concurrent=concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=concurrent, random_state=cfg.run.seed)


def scheduler(cfg: SweepConfig, reports: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=reports,
        grace_period=min(cfg.grace_period, reports),
        reduction_factor=cfg.reduction_factor,
    )
