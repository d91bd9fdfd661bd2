"""Meta-train and evaluate every method on image, audio or video signals.

``python pipelines/signals.py --modality image`` (or ``mclnf signals ...``): load real signals,
meta-train the meta-learned methods, evaluate all methods on held-out signals, print a results
table, write ``results.json`` + PNG plots, and track it all in MLflow.
"""

import json
import time
from pathlib import Path
from typing import Any, TypedDict

import torch

from mclnf_dist.config import describe, json_ready, parse_config, to_dict
from mclnf_dist.device import machine_info, pick_device
from mclnf_dist.distributed.fanout import fan_out, run_tasks
from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.plots import plot_psnr_curves, plot_reconstructions
from mclnf_dist.evaluation.protocol import MethodContext, MethodResult, evaluate_method
from mclnf_dist.evaluation.tables import results_table
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.experiments.signals_config import SignalsConfig, data_source, load_data, validate
from mclnf_dist.fields.sizing import matched_width
from mclnf_dist.fields.stacked_mlp import FieldConfig, init_params
from mclnf_dist.meta.methods import MethodSpec
from mclnf_dist.meta.outer_loop import meta_train
from mclnf_dist.progress import ProgressLog, quiet_logs
from mclnf_dist.signals.loading import (
    overlap_fraction,
)
from mclnf_dist.signals.signal_set import SignalSet
from mclnf_dist.storage import write_atomic
from mclnf_dist.tracking import Tracker


def main(argv: list[str]) -> None:
    """Entry point of ``pipelines/signals.py`` and ``mclnf signals``."""
    argv = ["--recipe" if a == "--modality" else a for a in argv]  # the short form
    if argv.count("--recipe") > 1:
        raise MclnfError("--modality NAME is short for --recipe NAME: give one of them")
    recipes = recipes_for(SignalsConfig)
    cfg = parse_config(SignalsConfig, argv, description=__doc__, recipes=recipes)
    run_signals(cfg)


class SignalsRunReport(TypedDict, total=False):
    """``results.json`` of a signals run, as :func:`run_signals` returns it (JSON values)."""

    modality: str
    machine: dict[str, Any]
    config: dict[str, Any]
    held_out: list[str]
    """The held-out signals' names."""
    overlap_fraction: float
    """Share of held-out signals whose source file or photo a training signal shares."""
    data: dict[str, Any]
    results: list[dict[str, Any]]
    """Per method: :meth:`~mclnf_dist.evaluation.protocol.MethodResult.summary`."""
    mlflow_run_id: str
    output_dir: str


def run_signals(cfg: SignalsConfig) -> SignalsRunReport:
    """Run the whole experiment; returns the JSON-able results."""
    specs = validate(cfg)
    device = pick_device(cfg.run.device)
    quiet_logs(cfg.run.verbose)
    print(describe(cfg), flush=True)
    train, test = load_data(cfg, device)
    out_dir = Path(cfg.output_dir) / cfg.data.modality
    out_dir.mkdir(parents=True, exist_ok=True)
    log = ProgressLog("signals")
    log.info(
        f"{train.num_signals} training / {test.num_signals} held-out {cfg.data.modality} "
        f"signals, grid {test.grid_shape}, {test.num_segments} segments, device {device}"
    )
    run_name = f"{cfg.data.modality}-{time.strftime('%Y%m%d-%H%M%S')}"
    with Tracker(
        cfg.run.experiment,
        run_name,
        cfg.run.tracking_uri or None,
        tags={"modality": cfg.data.modality},
    ) as tracker:
        tracker.log_params(to_dict(cfg))
        parallel = use_ray(cfg, device)
        log.info(f"running {len(specs)} methods " + ("as Ray tasks" if parallel else "in-process"))
        calls = [(cfg, spec, train, test, device) for spec in specs]
        results: list[MethodResult | None] = [None] * len(specs)
        # meta-training first, then a module per segment, then re-runs of the segments
        cost = [(s.meta_learned, s.modular, s.test_schedule == "sequential") for s in specs]
        for index, (result, history) in run_tasks(run_method, calls, parallel, cost=cost):
            log.info(
                f"{specs[index].name}: done, PSNR step1 {result.psnr_step1:.2f} "
                f"best {result.best[0]:.2f} (step {result.best[1]})"
            )
            for step, metrics in enumerate(history):
                if step % 10 == 0 or step == len(history) - 1:
                    tracker.log_metrics(
                        {f"meta_{result.method}_{k}": v for k, v in metrics.items()}, step
                    )
            log_result(tracker, result)
            results[index] = result
        report = write_outputs(cfg, results, train, test, out_dir)
        for path in sorted(out_dir.iterdir()):
            tracker.log_artifact(path, "results")
        report["mlflow_run_id"] = tracker.run_id
    title = f"{cfg.data.modality}: PSNR (dB) on held-out signals"
    print(results_table(report["results"], title=title))
    log.info(f"wrote {out_dir}/results.json and PNGs; MLflow run {report['mlflow_run_id']}")
    return report


def method_field(cfg: SignalsConfig, spec: MethodSpec, signals: SignalSet) -> FieldConfig:
    """The module architecture, widened for one-network methods when ``param_match`` is set."""
    if spec.modular or not cfg.param_match:
        return cfg.field
    return matched_width(cfg.field, signals.in_features, signals.out_features, signals.num_segments)


def use_ray(cfg: SignalsConfig, device: torch.device) -> bool:
    """Fan methods out as Ray tasks (``workers=-1``: on CPU yes, on one GPU no)."""
    return fan_out(cfg.workers, device.type)


def run_method(
    cfg: SignalsConfig, spec: MethodSpec, train: SignalSet, test: SignalSet, device: torch.device
) -> tuple[MethodResult, list[dict[str, float]]]:
    """One method end to end (its init, meta-trained if it is meta-learned, then the protocol).

    A pure function of its arguments, so it runs in-process or as a Ray task alike.
    """
    log = ProgressLog(spec.name)
    field_cfg = method_field(cfg, spec, train)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    init = init_params(field_cfg, train.in_features, train.out_features, 1, generator, device)
    history: list[dict[str, float]] = []
    if spec.meta_learned:
        bar = log.bar(f"meta-train {spec.name}", cfg.meta.outer_steps)

        def on_step(step: int, metrics: dict[str, float]) -> None:
            bar.update(1, outer_psnr=f"{metrics['outer_psnr']:.2f}")

        fim = cfg.fim if spec.fim else None
        init, history = meta_train(
            spec.meta_schedule,
            field_cfg,
            cfg.meta,
            fim,
            init,
            train.segment_coords(),
            train.segment_values(),
            cfg.run.seed,
            on_step,
        )
        bar.close()
    started = time.perf_counter()
    ctx = MethodContext(spec, field_cfg, init, cfg.meta, cfg.fim, cfg.adapt, seed=cfg.run.seed)
    result = evaluate_method(ctx, test, log)
    log.info(f"evaluated in {time.perf_counter() - started:.1f}s")
    return result, history


def log_result(tracker: Tracker, result: MethodResult) -> None:
    for step, psnr in sorted(result.curve.items()):
        tracker.log_metrics({f"{result.method}_psnr": psnr}, step=step)
    summary = result.summary()
    keys = ("psnr_step1", "psnr_best", "best_step", "psnr_last", "ssim_last", "forgetting")
    tracker.log_metrics({f"{result.method}_{k}": summary[k] for k in keys})


def write_outputs(
    cfg: SignalsConfig,
    results: list[MethodResult],
    train: SignalSet,
    test: SignalSet,
    out_dir: Path,
) -> SignalsRunReport:
    """``results.json`` and the plots; the report states the split's source overlap (measured
    on the signals used, so a leak shows as a nonzero number rather than a claim)."""
    report = SignalsRunReport(
        modality=cfg.data.modality,
        machine=machine_info(),
        config=json_ready(to_dict(cfg)),
        held_out=test.names,
        overlap_fraction=overlap_fraction(train, test),
        data={
            "source": data_source(cfg),
            "num_train": train.num_signals,
            "num_held_out": test.num_signals,
            "split_seed": cfg.data.split_seed,
            "train_sources": sorted(set(train.sources)),
            "test_sources": sorted(set(test.sources)),
            "grid": list(test.grid_shape),
            "segments": test.num_segments,
        },
        results=[r.summary() for r in results],
    )
    write_atomic(out_dir / "results.json", json.dumps(report, indent=1))
    title = f"{cfg.data.modality}: PSNR vs adaptation steps ({test.num_signals} held-out signals)"
    plot_psnr_curves(results, out_dir / "psnr_curves.png", title)
    plot_reconstructions(results, test, out_dir / "reconstructions.png")
    return report
