"""The product's main job: meta-continual learning of a city-scale NeRF on Ray.

``python pipelines/city_nerf.py`` (laptop: embedded Ray, sqlite MLflow, generated demo city) or
``ray job submit --working-dir . -- python pipelines/city_nerf.py`` (a cluster). Steps: scene ->
Arrow ray stores (train/test views, same blocks) -> distributed meta-training of ``theta_0`` on
Ray Train with a meta-init server -> continual phase (blocks arrive in order; every method adapts,
as parallel Ray tasks) -> results table, JSON, PSNR curves, rendered novel views, saved city
model, all tracked in MLflow.
"""

import dataclasses
import hashlib
import time
from pathlib import Path

import torch

from mclnf_dist.city.blocks import block_phase
from mclnf_dist.city.data import (
    CityData,
    blocks_as_segments,
    city_field,
    field_for_capture,
    prepare_city,
)
from mclnf_dist.city.extend import extend_city
from mclnf_dist.city.init_asset import load_init, save_init
from mclnf_dist.city.inits import key_field
from mclnf_dist.city.outputs import held_out_psnr, render_and_save, write_city_outputs
from mclnf_dist.city.results import BlockPhaseResult, CityRunReport, ExtensionReport
from mclnf_dist.config import check_config, describe, json_ready, parse_config, to_dict
from mclnf_dist.device import pick_device
from mclnf_dist.distributed.block_episodes import MetaOverlap, meta_training_overlap
from mclnf_dist.distributed.checkpoints import CheckpointStore
from mclnf_dist.distributed.fanout import fan_out, run_tasks
from mclnf_dist.distributed.meta_train_loop import WorkerJob
from mclnf_dist.distributed.meta_trainer import meta_train_distributed
from mclnf_dist.distributed.train_config import check_workers
from mclnf_dist.errors import MclnfError
from mclnf_dist.evaluation.city_images import RenderedCityScorer, spread_views
from mclnf_dist.evaluation.protocol import MethodContext, MethodResult, evaluate_method
from mclnf_dist.evaluation.tables import results_table
from mclnf_dist.experiments.city_config import CityExperimentConfig
from mclnf_dist.experiments.recipes import recipes_for
from mclnf_dist.faults import WORKER_DEATH_ROUND, armed
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.interrupts import install_signal_handlers, on_interrupt
from mclnf_dist.jobs.city_preflight import preflight_city
from mclnf_dist.meta.methods import MSE, RANDOM, InitKey, MethodSpec, distinct_methods, init_key
from mclnf_dist.nerf.field import (
    RadianceFieldConfig,
    init_radiance_params,
)
from mclnf_dist.progress import ProgressLog, quiet_logs
from mclnf_dist.runs import RunFolders, RunLock, mark_complete, open_run
from mclnf_dist.runtime import ensure_ray
from mclnf_dist.scenes.scene import check_scene, reading_once, scene_options
from mclnf_dist.signals.signal_set import SignalSet
from mclnf_dist.storage import check_store, write_atomic
from mclnf_dist.tracking import Tracker


def main(argv: list[str]) -> None:
    """Entry point of ``pipelines/city_nerf.py`` and ``mclnf city``."""
    recipes = recipes_for(CityExperimentConfig)
    run_city(parse_config(CityExperimentConfig, argv, description=__doc__, recipes=recipes))


@reading_once()  # one run: the scene's splits are parsed once, however many phases read them
def run_city(cfg: CityExperimentConfig) -> CityRunReport | ExtensionReport:
    """Run the whole city job; returns the JSON-able report."""
    check_config(cfg)  # configs built in code skip the command line's checks
    specs, twins = distinct_methods(cfg.methods, cfg.fim.fim_lambda)
    device = pick_device(cfg.run.device)
    quiet_logs(cfg.run.verbose)
    print(describe(cfg), flush=True)
    log = ProgressLog("city")
    for name, twin in twins.items():
        log.info(
            f"{name} is {twin} with --fim.fim-lambda 0: not run (its comparison is not tested)"
        )
    storage = cfg.storage_uri or str(Path(cfg.data.work_dir) / "runs")

    check_store(storage, "--storage-uri")  # an unusable s3:// store: one line, before any work
    check_store(cfg.data.data_uri, "--data.data-uri")
    CheckpointStore(storage)  # fail now if it can't be written
    if cfg.data.scene:  # read and check it all before starting Ray
        given = check_scene(cfg.data.scene, **scene_options(cfg.data, cfg.field.scene_box))
        log.info(f"scene {cfg.data.scene}: {len(given.frames)} views; {given.box_note}".strip("; "))
        settled = field_for_capture(cfg.field, given)
        if settled != cfg.field:
            log.info(
                f"{cfg.data.scene}: objects cut out on a background (transparent pixels): the box "
                f"and {settled.num_samples} stratified samples a ray, no contraction or proposal "
                "(--field.no-box-for-cut-outs keeps them)"
            )
            cfg = dataclasses.replace(cfg, field=settled)
    preflight_city(cfg)  # work folder, --meta.init-from shapes, --extend's model and world
    run = open_run(cfg.data.work_dir, storage, cfg.run_name, cfg.fresh)
    with RunLock(run.storage, run.label):
        verb = "continuing the interrupted run" if run.resumed else "run"
        log.info(f"{verb} {run.label}: outputs in {run.out}, checkpoints in {run.storage}")
        on_interrupt(
            f"run {run.label} stopped; re-run the same command to resume it (--fresh starts over)"
        )
        ensure_ray(worker_logs=cfg.run.verbose)
        install_signal_handlers()  # after ray.init, which sets its own SIGTERM handler
        if cfg.extend:
            return run_extension(cfg, run, device, log)
        report = run_full(cfg, specs, run, device, log)
    log.info(f"wrote {run.out}; MLflow run {report['mlflow_run_id']}")
    return report


def run_full(
    cfg: CityExperimentConfig,
    specs: list[MethodSpec],
    run: RunFolders,
    device: torch.device,
    log: ProgressLog,
) -> CityRunReport:
    """Data, meta-training, continual phase, block phase, outputs: a full run in ``run``;
    returns the JSON-able report (``results.json`` and the MLflow run's id)."""
    city = prepare_city(cfg.data, log, cfg.field.scene_box, unbounded=cfg.field.contraction)
    if any(s.meta_learned for s in specs):
        check_workers(cfg.train.num_workers, city.meta_blocks)  # before any run is tracked
    leakage = meta_training_leakage(cfg, city, log)  # a meta block left with no ray stops here

    scene = city.load_scene("all")
    field_cfg = city_field(cfg.field, scene)
    if field_cfg.appearance:  # a code per training image (ray image ids index the train split)
        images = len(city.load_scene("train").frames)
        field_cfg = dataclasses.replace(field_cfg, appearance_images=images)
    fit = blocks_as_segments(
        city.train_uri, city.block_order, cfg.data.fit_rays_per_block, cfg.run.seed, "train views"
    )
    # scored as users get it: full held-out images rendered through the routed model
    views = spread_views(city.load_scene("test"), cfg.score_views)
    score = RenderedCityScorer(field_cfg, city.partition, city.block_order, views)
    tags = {"job": "city_nerf", "run": run.label}
    name = f"{cfg.run_name}-{run.run_id}"
    with Tracker(cfg.run.experiment, name, cfg.run.tracking_uri or None, tags=tags) as tracker:
        tracker.log_params(to_dict(cfg))
        tracker.log_metrics({f"meta_rays_{k}": v for k, v in leakage.to_json().items()})
        inits = meta_train_all(cfg, specs, field_cfg, city, run, tracker, log)
        results = continual_phase(cfg, specs, field_cfg, inits, fit, score, device, log)
        for result in results:
            log_city_result(tracker, result, city)
        out = run.out
        render_and_save(cfg, results, field_cfg, city, scene, out, log)
        blocks = run_block_phase(cfg, inits, field_cfg, city, run.storage, out, device, log)
        log_block_phase(tracker, blocks)
        report = write_city_outputs(cfg, results, city, out, blocks, leakage)
        for path in sorted(p for p in out.iterdir() if p.is_file()):
            tracker.log_artifact(path, "results")
        for path in sorted(p for p in (out / "city_model").iterdir() if p.is_file()):
            tracker.log_artifact(path, "city_model")  # a folder would land in city_model/city_model
        report["mlflow_run_id"] = tracker.run_id
        report["run_folder"] = str(out)
        mark_complete(run, {"mlflow_run_id": tracker.run_id})  # the last write of the run
    print_summary(report, blocks, city)
    return report


def print_summary(report: CityRunReport, blocks: BlockPhaseResult, city: CityData) -> None:
    """The results table and the block phase's lines, for a person reading the terminal."""
    print(results_table(report["results"], title="city: PSNR (dB) on held-out views, all blocks"))
    held = report["held_out_blocks"]
    steps = [k for k in next(iter(held.values()), {}) if k.startswith("psnr_step")]
    if steps and city.held_out:
        scores = ", ".join(
            f"{name} " + " -> ".join(f"{row[k]:.2f}" for k in steps) for name, row in held.items()
        )
        print(f"held-out blocks {city.held_out}, PSNR (dB) at {' -> '.join(steps)}: {scores}")
    for name, scores in blocks.inits.items():
        reach = (blocks.steps_to_reach_other_final or {}).get(name, "-")
        print(
            f"city model, {name} init, {blocks.steps} steps per block: held-out images PSNR "
            f"{scores.heldout_image_psnr:.2f} dB, SSIM {scores.heldout_image_ssim:.3f}; "
            f"steps to the other init's final probe PSNR: {reach}"
        )


OVERLAP_RAYS_PER_BLOCK = 16384
"""At most this many of each meta block's drawn rays are checked for the report (the first
rounds'); the check costs about as much as the streams' own filtering of them."""


def meta_training_leakage(
    cfg: CityExperimentConfig, city: CityData, log: ProgressLog
) -> MetaOverlap:
    """:func:`meta_training_overlap` of the job's meta-training streams over its first rounds (up
    to :data:`OVERLAP_RAYS_PER_BLOCK` rays per block): ``overlap_fraction`` must be 0."""
    per_round = 2 * cfg.train.rays_per_task
    rounds = max(1, min(cfg.meta.outer_steps, OVERLAP_RAYS_PER_BLOCK // per_round))
    leakage = meta_training_overlap(
        city.train_uri,
        city.meta_blocks,
        city.non_meta_blocks,
        cfg.train.rays_per_task,
        cfg.run.seed,
        cfg.train.num_workers,
        rounds,
    )
    log.info(
        f"meta-training streams skip {leakage.excluded_fraction:.1%} of the rays of blocks "
        f"{city.meta_blocks} that cross blocks {city.non_meta_blocks}; of {leakage.rays_drawn} "
        f"drawn rays checked, a fraction {leakage.overlap_fraction} cross them"
    )
    return leakage


def run_extension(
    cfg: CityExperimentConfig, run: RunFolders, device: torch.device, log: ProgressLog
) -> ExtensionReport:
    """The ``--extend`` run: new blocks added to a saved city model, tracked like a full run."""
    parallel = fan_out(cfg.workers, device.type)
    name = f"{cfg.run_name}-extend-{run.run_id}"
    tags = {"job": "city_extend", "run": run.label}
    with Tracker(cfg.run.experiment, name, cfg.run.tracking_uri or None, tags) as tracker:
        tracker.log_params(to_dict(cfg))
        extension = extend_city(cfg, run, parallel, log)
        log_block_phase(tracker, extension.blocks)
        out = run.out
        report = ExtensionReport(**extension.to_json())
        write_atomic(str(out / "extension.json"), json_ready(report))
        for path in sorted((out / "city_model").iterdir()):
            tracker.log_artifact(path, "city_model")
        report["mlflow_run_id"] = tracker.run_id
        report["run_folder"] = str(out)
        mark_complete(run, {"mlflow_run_id": tracker.run_id})
    scores = extension.blocks.inits["meta"]
    print(
        f"extended city model: blocks {extension.kept_blocks} kept, "
        f"{len(scores.per_block_psnr)} blocks seen in the new held-out views; "
        f"held-out images PSNR {scores.heldout_image_psnr:.2f} dB, "
        f"SSIM {scores.heldout_image_ssim:.3f}"
    )
    log.info(f"wrote {out}; MLflow run {report['mlflow_run_id']}")
    return report


def run_block_phase(
    cfg: CityExperimentConfig,
    inits: dict[InitKey, Params],
    field_cfg: RadianceFieldConfig,
    city: CityData,
    storage: str,
    out: Path,
    device: torch.device,
    log: ProgressLog,
) -> BlockPhaseResult:
    """Block training from the meta-learned ``theta_0`` (``mse``, when meta-trained) and from the
    random init, same budget; each city model saved and scored on full held-out images."""
    block_inits = {"meta": inits[MSE]} if MSE in inits else {}
    block_inits["random"] = inits[RANDOM]
    root = f"{storage.rstrip('/')}/blocks"
    parallel = fan_out(cfg.workers, device.type)
    seed = cfg.run.seed
    return block_phase(cfg.block, block_inits, field_cfg, city, root, out, seed, parallel, log)


def log_block_phase(tracker: Tracker, blocks: BlockPhaseResult) -> None:
    for name, scores in blocks.inits.items():
        tracker.log_metrics(
            {
                f"blocks_{name}_heldout_image_psnr": scores.heldout_image_psnr,
                f"blocks_{name}_heldout_image_ssim": scores.heldout_image_ssim,
            }
        )
        for step, psnr in scores.probe_curve.items():
            tracker.log_metrics({f"blocks_{name}_probe_psnr": psnr}, step=step)


def meta_train_all(
    cfg: CityExperimentConfig,
    specs: list[MethodSpec],
    field_cfg: RadianceFieldConfig,
    city: CityData,
    run: RunFolders,
    tracker: Tracker,
    log: ProgressLog,
) -> dict[InitKey, Params]:
    """Every init the methods need (``random`` and each meta-objective, per field), the
    meta-learned ones meta-trained on Ray Train."""

    blocks = len(city.block_order)
    inits = {}
    keys = {init_key(s, cfg.fim.fim_lambda, True, cfg.param_match) for s in specs} | {RANDOM}
    for key in sorted(keys, key=str):
        field = key_field(field_cfg, key, blocks)
        generator = torch.Generator().manual_seed(cfg.run.seed)
        random_init = init_radiance_params(field, 1, generator)
        if not key.meta_learned:
            inits[key] = random_init
            continue
        if cfg.meta.init_from:
            inits[key] = loaded_init(cfg, key, random_init, log)
        else:
            inits[key] = meta_train_objective(cfg, key, field, city, run.storage, tracker, log)
        # theta_0 travels with the city model: a later job can start from it or extend the model
        save_init(run.out / "city_model", key, inits[key], field)
    return inits


def meta_train_objective(
    cfg: CityExperimentConfig,
    key: InitKey,
    field_cfg: RadianceFieldConfig,
    city: CityData,
    storage: str,
    tracker: Tracker,
    log: ProgressLog,
) -> Params:
    """``theta_0`` of one meta-objective, meta-trained on Ray Train (resumable: ``storage`` is
    the run's own checkpoint folder)."""
    log.info(
        f"meta-training theta_0 ({key} inner loss) on blocks {city.meta_blocks} with "
        f"{cfg.train.num_workers} workers, {cfg.meta.outer_steps} rounds"
    )
    random_init = init_radiance_params(field_cfg, 1, torch.Generator().manual_seed(cfg.run.seed))
    job = worker_job(cfg, key, field_cfg, city, storage)
    theta0, history = meta_train_distributed(
        job,
        cfg.train,
        random_init,
        cfg.meta.outer_lr,
        cfg.meta.grad_clip,
        f"meta-{key}",
        storage,
    )
    for round_, metrics in enumerate(history, start=1):
        tracker.log_metrics({f"meta_{key}_{k}": v for k, v in metrics.items()}, round_)
    return theta0


def loaded_init(cfg: CityExperimentConfig, key: InitKey, like: Params, log: ProgressLog) -> Params:
    """``theta_0`` of the ``key`` objective from ``--meta.init-from`` (its ``mse`` init when the
    source has none for ``key``), instead of meta-training."""
    try:
        theta0 = load_init(cfg.meta.init_from, key, like, cfg.run.tracking_uri)
    except MclnfError:
        if key == MSE:
            raise
        theta0, key = load_init(cfg.meta.init_from, MSE, like, cfg.run.tracking_uri), MSE
    log.info(f"theta_0 from {cfg.meta.init_from} ({key} objective): not meta-training")
    return theta0


def worker_job(
    cfg: CityExperimentConfig,
    key: InitKey,
    field_cfg: RadianceFieldConfig,
    city: CityData,
    storage: str,
) -> WorkerJob:
    """What every Train worker of the ``key`` meta-training runs (``mse``, ``fim`` or ``oml``).

    ``storage``: the run's checkpoint folder; it also makes the meta-init server's actor name
    unique to the run, so two runs on one cluster never share a server."""
    run_name = f"meta-{key}"
    unique = hashlib.sha256(storage.encode()).hexdigest()[:8]
    return WorkerJob(
        field=field_cfg,
        meta=cfg.meta,
        fim=cfg.fim if key.uses_fim else None,
        data_uri=city.train_uri,
        blocks=city.meta_blocks,
        rays_per_task=cfg.train.rays_per_task,
        rounds=cfg.meta.outer_steps,
        server_name=f"meta-init-{cfg.run_name}-{key}-{unique}",
        server_namespace=None,
        cpus_per_worker=cfg.train.cpus_per_worker,
        seed=cfg.run.seed,
        die_at_round=armed(WORKER_DEATH_ROUND),
        died_marker=f"{storage.rstrip('/')}/{run_name}/worker-failed-once",
        schedule=key.schedule,
        label=f"meta-train {key}",
        avoid_blocks=city.non_meta_blocks,
    )


def city_method(ctx: MethodContext, fit: SignalSet, score: RenderedCityScorer) -> MethodResult:
    """One method's continual phase (a Ray task)."""
    return evaluate_method(ctx, fit, ProgressLog(ctx.spec.name), score)


def continual_phase(
    cfg: CityExperimentConfig,
    specs: list[MethodSpec],
    field_cfg: RadianceFieldConfig,
    inits: dict[InitKey, Params],
    fit: SignalSet,
    score: RenderedCityScorer,
    device: torch.device,
    log: ProgressLog,
) -> list[MethodResult]:
    """Blocks arrive in order; every method adapts to each block for up to ``max_steps``."""
    contexts = []
    for spec in specs:
        key = init_key(spec, cfg.fim.fim_lambda, True, cfg.param_match)
        init = {k: v.to(device) for k, v in inits[key].items()}
        field = key_field(field_cfg, key, fit.num_segments)
        contexts.append(
            MethodContext(spec, field, init, cfg.meta, cfg.fim, cfg.adapt, seed=cfg.run.seed)
        )
    parallel = fan_out(cfg.workers, device.type)
    log.info(f"continual phase: {len(contexts)} methods over {fit.num_segments} blocks")
    calls = [(ctx, fit.to(device), score) for ctx in contexts]
    results: list[MethodResult | None] = [None] * len(calls)
    started = time.perf_counter()

    def still_running() -> None:  # a heartbeat while methods adapt and score (minutes each)
        done = sum(r is not None for r in results)
        running = ", ".join(
            c[0].spec.name for c, r in zip(calls, results, strict=True) if r is None
        )
        log.info(
            f"continual phase: {done}/{len(calls)} methods done after "
            f"{time.perf_counter() - started:.0f} s; adapting and scoring: {running}"
        )

    # modular methods adapt a module per block, sequential ones re-run the blocks per checkpoint
    cost = [(c.spec.modular, c.spec.test_schedule == "sequential") for c in contexts]
    fanned = run_tasks(city_method, calls, parallel, on_idle=still_running, idle_s=60, cost=cost)
    for index, result in fanned:
        log.info(f"{result.method}: PSNR step1 {result.psnr_step1:.2f} best {result.best[0]:.2f}")
        results[index] = result
    return results


def log_city_result(tracker: Tracker, result: MethodResult, city: CityData) -> None:
    for step in sorted(result.curve):
        metrics = {f"{result.method}_psnr": result.curve[step]}
        held = held_out_psnr(result, city, step)
        if held is not None:
            metrics[f"{result.method}_heldout_psnr"] = held
        tracker.log_metrics(metrics, step=step)
    tracker.log_metrics(
        {
            f"{result.method}_forgetting": result.forgetting,
            f"{result.method}_params": result.params_per_signal,
        }
    )
