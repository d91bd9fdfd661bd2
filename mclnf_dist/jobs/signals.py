"""Meta-train and evaluate every method on image, audio or video signals (issue: the core).

``python pipelines/signals.py --modality image`` (or ``mclnf signals ...``): load real signals,
meta-train the meta-learned methods, evaluate all methods on held-out signals, print a results
table, write ``results.json`` + PNG plots, and track it all in MLflow.
"""

import json
import os
import time
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path

import torch

from mclnf_dist.config import describe, json_ready, parse_config, to_dict
from mclnf_dist.device import machine_info, pick_device
from mclnf_dist.distributed.fanout import run_tasks
from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.plots import plot_psnr_curves, plot_reconstructions
from mclnf_dist.evaluation.protocol import MethodContext, MethodResult, evaluate_method
from mclnf_dist.evaluation.tables import results_table
from mclnf_dist.fields.sizing import matched_width
from mclnf_dist.fields.stacked_mlp import FieldConfig, init_params
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.methods import METHODS, MethodSpec, get_method
from mclnf_dist.meta.outer_loop import meta_train
from mclnf_dist.progress import ProgressLog
from mclnf_dist.signals.loading import load_signal_set, split_train_test
from mclnf_dist.signals.signal_set import SignalSet
from mclnf_dist.storage import write_atomic
from mclnf_dist.tracking import Tracker

MODALITIES = ("image", "audio", "video")
DEFAULT_SOURCES = {"image": "builtin:lfw", "audio": "builtin:clips", "video": "builtin:clips"}
DEFAULT_SPLITS = {"image": (80, 20), "audio": (32, 8), "video": (12, 4)}
# Adaptation budgets that keep a default run of all eight methods under 15 minutes on 2 CPUs:
# the sequential baselines cost ~2 x budget x segments steps each, and video has 8 segments of
# 1024 coordinates (a GPU or a cluster runs --adapt.max-steps 4096 for every modality).
DEFAULT_MAX_STEPS = {"image": 4096, "audio": 1024, "video": 256}
# Second-order meta-batches of long signals dominate the rest: signals per meta-batch.
DEFAULT_META_BATCH = {"image": 8, "audio": 3, "video": 2}


@dataclass
class DataConfig:
    """Which signals, and how many for meta-training and for evaluation."""

    modality: str = "image"
    """``image`` | ``audio`` | ``video``."""
    source: str = ""
    """A folder/file path or ``builtin:<name>``; empty: the modality's built-in real data."""
    num_train: int = 0
    """Signals for meta-training; 0: the modality's default."""
    num_test: int = 0
    """Held-out signals for evaluation; 0: the modality's default."""


@dataclass
class SignalsConfig:
    """The signals experiment: data, architecture, meta-training, evaluation, tracking."""

    data: DataConfig = default(default_factory=DataConfig)
    field: FieldConfig = default(default_factory=FieldConfig)
    meta: MetaConfig = default(default_factory=lambda: MetaConfig(meta_batch_size=0))
    fim: FimConfig = default(default_factory=lambda: FimConfig(fim_lambda=0.5))
    adapt: AdaptConfig = default(default_factory=lambda: AdaptConfig(max_steps=0))
    methods: tuple[str, ...] = tuple(METHODS)
    """Methods to run (all eight by default)."""
    param_match: bool = False
    """Widen the one-network methods to the modular methods' total parameter count."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    output_dir: str = "outputs/signals"
    tracking_uri: str = ""
    """MLflow tracking URI; empty: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db."""
    experiment: str = "mclnf-signals"
    """MLflow experiment name."""
    workers: int = -1
    """Methods run as parallel Ray tasks (1 CPU each) when > 1; -1: on CPU yes, on a GPU no."""


def main(argv: list[str]) -> None:
    """Entry point of ``pipelines/signals.py`` and ``mclnf signals``."""
    argv = ["--data.modality" if a == "--modality" else a for a in argv]  # the short form
    cfg = parse_config(SignalsConfig, argv, description=__doc__)
    run_signals(cfg)


def validate(cfg: SignalsConfig) -> list[MethodSpec]:
    if cfg.data.modality not in MODALITIES:
        raise MclnfError(
            f"unknown modality {cfg.data.modality!r} (expected one of: {', '.join(MODALITIES)})"
        )
    return [get_method(name) for name in cfg.methods]


def apply_modality_defaults(cfg: SignalsConfig) -> None:
    """Fill the fields whose 0 means "the modality's default" (budget, meta-batch), in place."""
    if cfg.adapt.max_steps <= 0:
        cfg.adapt.max_steps = DEFAULT_MAX_STEPS[cfg.data.modality]
    if cfg.meta.meta_batch_size <= 0:
        cfg.meta.meta_batch_size = DEFAULT_META_BATCH[cfg.data.modality]


def run_signals(cfg: SignalsConfig) -> dict:
    """Run the whole experiment; returns the JSON-able results."""
    specs = validate(cfg)
    apply_modality_defaults(cfg)
    device = pick_device(cfg.device)
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
        cfg.experiment, run_name, cfg.tracking_uri or None, tags={"modality": cfg.data.modality}
    ) as tracker:
        tracker.log_params(to_dict(cfg))
        parallel = use_ray(cfg, device)
        log.info(f"running {len(specs)} methods " + ("as Ray tasks" if parallel else "in-process"))
        calls = [(cfg, spec, train, test, device) for spec in specs]
        results: list[MethodResult | None] = [None] * len(specs)
        for index, (result, history) in run_tasks(run_method, calls, parallel):
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
        report = write_outputs(cfg, results, test, out_dir)
        for path in sorted(out_dir.iterdir()):
            tracker.log_artifact(path, "results")
        report["mlflow_run_id"] = tracker.run_id
    title = f"{cfg.data.modality}: PSNR (dB) on held-out signals"
    print(results_table(report["results"], title=title))
    log.info(f"wrote {out_dir}/results.json and PNGs; MLflow run {report['mlflow_run_id']}")
    return report


def load_data(cfg: SignalsConfig, device: torch.device) -> tuple[SignalSet, SignalSet]:

    source = cfg.data.source or DEFAULT_SOURCES[cfg.data.modality]
    signals = load_signal_set(cfg.data.modality, source)
    num_train = cfg.data.num_train or DEFAULT_SPLITS[cfg.data.modality][0]
    num_test = cfg.data.num_test or DEFAULT_SPLITS[cfg.data.modality][1]
    train, test = split_train_test(signals, num_train, num_test, cfg.seed)
    return train.to(device), test.to(device)


def method_field(cfg: SignalsConfig, spec: MethodSpec, signals: SignalSet) -> FieldConfig:
    """The module architecture, widened for one-network methods when ``param_match`` is set."""
    if spec.modular or not cfg.param_match:
        return cfg.field
    return matched_width(cfg.field, signals.in_features, signals.out_features, signals.num_segments)


def use_ray(cfg: SignalsConfig, device: torch.device) -> bool:
    """Fan methods out as Ray tasks (``workers=-1``: on CPU yes, on one GPU no)."""
    if cfg.workers == -1:
        return device.type == "cpu" and (os.cpu_count() or 1) > 1
    return cfg.workers > 1


def run_method(
    cfg: SignalsConfig, spec: MethodSpec, train: SignalSet, test: SignalSet, device: torch.device
) -> tuple[MethodResult, list[dict[str, float]]]:
    """One method end to end (its init, meta-trained if it is meta-learned, then the protocol).

    A pure function of its arguments, so it runs in-process or as a Ray task alike.
    """
    log = ProgressLog(spec.name)
    field_cfg = method_field(cfg, spec, train)
    generator = torch.Generator().manual_seed(cfg.seed)
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
            cfg.seed,
            on_step,
        )
        bar.close()
    started = time.perf_counter()
    ctx = MethodContext(spec, field_cfg, init, cfg.meta, cfg.fim, cfg.adapt)
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
    cfg: SignalsConfig, results: list[MethodResult], test: SignalSet, out_dir: Path
) -> dict:

    report = {
        "modality": cfg.data.modality,
        "machine": machine_info(),
        "config": json_ready(to_dict(cfg)),
        "held_out": test.names,
        "data": {
            "source": cfg.data.source or DEFAULT_SOURCES[cfg.data.modality],
            "num_train": cfg.data.num_train or DEFAULT_SPLITS[cfg.data.modality][0],
            "num_held_out": test.num_signals,
            "grid": list(test.grid_shape),
            "segments": test.num_segments,
        },
        "results": [r.summary() for r in results],
    }
    write_atomic(out_dir / "results.json", json.dumps(report, indent=1))
    title = f"{cfg.data.modality}: PSNR vs adaptation steps ({test.num_signals} held-out signals)"
    plot_psnr_curves(results, out_dir / "psnr_curves.png", title)
    plot_reconstructions(results, test, out_dir / "reconstructions.png")
    return report
