"""One sweep trial: a short in-process meta-training that reports validation PSNR as it goes.

:func:`meta_train_and_validate` is the trial itself, a pure function of a config and the prepared
data: every ``metric.every`` meta-rounds it adapts fresh modules from the current ``theta_0`` on
validation data for ``metric.adapt_step`` steps and hands the scores and its full state
(``theta_0``, outer Adam, round, random states) to a callback. :func:`run_trial` is that function
under Ray Tune (the callback logs to the trial's own MLflow run and calls ``ray.tune.report`` with
a checkpoint, so a restored trial continues where it stopped); :func:`evaluate_config` runs it
once without Tune.

Everything is seeded from the config, one torch thread per CPU of the trial, and validation runs
on a forked random state: re-running a config gives the same numbers (CPU, same thread count), and
how often a trial validates does not change its meta-training.
"""

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mclnf_dist.config import load_yaml_config
from mclnf_dist.device import pick_device
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.experiment_config import ExperimentConfig
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.meta.outer_loop import LocalStore, meta_train_loop
from mclnf_dist.nerf.sampling import seeded_jitter
from mclnf_dist.progress import ProgressLog
from mclnf_dist.state import load_state, save_state
from mclnf_dist.sweeps.mlflow_runs import TrialRun
from mclnf_dist.sweeps.space import SweepSpace
from mclnf_dist.sweeps.targets import CityPrepared, SignalsPrepared, trial_method

STATE_FILE = "trial_state.pt"
TRIAL_STATE = "sweep trial checkpoint"


@dataclass
class TrialSettings:
    """What every trial of one sweep shares (filled in by the driver)."""

    sweep: str
    space: SweepSpace
    experiment: str
    tracking_uri: str
    parent_run_id: str
    threads: int = 1
    device: str = "cpu"
    """``cuda`` when every trial is given a GPU (Ray makes only that one visible), else ``cpu``."""


def meta_train_and_validate(
    cfg: ExperimentConfig,
    prepared: CityPrepared | SignalsPrepared,
    space: SweepSpace,
    on_report: Callable[[dict[str, float], dict], None],
    state: dict | None = None,
    log: ProgressLog | None = None,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Meta-train ``theta_0`` for the config's budget, validating every ``metric.every`` rounds.

    Args:
        cfg: the trial's full pipeline config (:meth:`SweepSpace.trial_config`).
        prepared: the pipeline's data (:meth:`Pipeline.prepare`).
        on_report: called with (metrics, state) after every validation; ``state`` restores it.
        state: a state from an earlier ``on_report``: continue from there.
        device: where the trial computes (default CPU); episodes are drawn on the CPU either way.

    Returns:
        The last metrics: ``round``, ``val_psnr`` (at ``adapt_step``), ``val_psnr_step1``,
        ``outer_psnr`` (mean over the rounds since the previous report).
    """
    device = device or torch.device("cpu")
    task = prepared.task(cfg, device)
    metric, rounds = space.metric, space.rounds(cfg)
    store = LocalStore(task.init(), cfg.meta.outer_lr, cfg.meta.grad_clip)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    last: dict[str, float] = {}
    if state is not None:
        store.load_state_dict(state["store"])
        generator.set_state(state["generator"])
        last = state["metrics"]
    episodes = task.episodes(generator, store.version)
    outer_psnr: list[float] = []
    started = time.perf_counter()

    def on_round(round_: int, metrics: dict[str, float]) -> None:
        nonlocal last
        outer_psnr.append(metrics["outer_psnr"])
        if round_ % metric.every and round_ != rounds:
            return
        result = task.validate(store.params(), metric.adapt_step)  # its own streams
        last = {
            "round": round_,
            "val_psnr": result.curve[metric.adapt_step],
            "val_psnr_step1": result.curve[1],
            "outer_psnr": sum(outer_psnr) / len(outer_psnr),
        }
        outer_psnr.clear()
        if log is not None:
            log.info(
                f"round {round_}/{rounds}: val PSNR {last['val_psnr']:.2f} dB after "
                f"{metric.adapt_step} steps ({last['val_psnr_step1']:.2f} after 1), outer PSNR "
                f"{last['outer_psnr']:.2f} dB, {time.perf_counter() - started:.1f}s"
            )
        snapshot = {
            "round": round_,
            "metrics": last,
            "store": store.state_dict(),
            "generator": generator.get_state(),
            "jitter": jitter.get_state(),
        }
        on_report(last, snapshot)

    with seeded_jitter(task.seed) as jitter:  # the radiance field's sample jitter: one stream
        if state is not None and "jitter" in state:
            jitter.set_state(state["jitter"])
        meta_train_loop(task.field, cfg.meta, task.fim, store, episodes, rounds, on_round)
    return last


def run_trial(params: dict[str, Any], prepared: Any, settings: TrialSettings) -> None:
    """The Ray Tune function trainable (``tune.with_parameters`` supplies the last two)."""
    from ray import tune

    torch.set_num_threads(settings.threads)
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line a report
    trial_id = tune.get_context().get_trial_id()
    log = ProgressLog(f"trial {trial_id}")
    cfg = settings.space.trial_config(params)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_state(os.path.join(folder, STATE_FILE), TRIAL_STATE)
        log.info(f"resuming at round {state['round']}")
    logged = {**params, "method": trial_method(cfg).name}
    run = TrialRun(settings, trial_id, logged, (state or {}).get("mlflow_run_id"))

    def on_report(metrics: dict[str, float], state: dict) -> None:
        run.log_metrics(metrics, step=int(metrics["round"]))
        with tempfile.TemporaryDirectory() as folder:
            state = {**state, "mlflow_run_id": run.run_id}
            save_state(os.path.join(folder, STATE_FILE), TRIAL_STATE, state)
            # Blocks until Tune decides; a trial the scheduler stops exits here (SystemExit).
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        device = pick_device(settings.device)
        meta_train_and_validate(cfg, prepared, settings.space, on_report, state, log, device)
    except SystemExit:  # stopped by the scheduler (the driver tags the run "stopped early")
        run.end("FINISHED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")


def evaluate_config(
    config_path: str,
    space: SweepSpace,
    threads: int = 1,
    log: ProgressLog | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Re-run one trial from a full config file (e.g. ``best_config.yaml``), without Tune.

    Same data preparation, seeds and thread count as in the sweep, so the final ``val_psnr``
    reproduces the trial's (the reproducibility check; exactly so on the CPU). ``device``:
    ``cpu``, ``cuda`` or ``auto``, as :func:`~mclnf_dist.device.pick_device` takes it.
    """

    config_class = space.pipeline.config_class
    cfg = load_yaml_config(config_class, config_path, recipes_for(config_class))
    base = space.base_config()
    if cfg.data != base.data:
        raise MclnfError(
            f"{config_path}: data differs from the base of {space.source} (expected a config of "
            "that sweep: its data were prepared from the base)"
        )
    log = log or ProgressLog("rerun")
    prepared = space.pipeline.prepare(base, log)  # as the sweep did (a swept seed included)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return meta_train_and_validate(
            cfg, prepared, space, lambda m, s: None, None, log, pick_device(device)
        )
    finally:
        torch.set_num_threads(previous)
