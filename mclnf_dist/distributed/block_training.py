"""Block training: every block's module trained to quality by streaming ALL its rays.

The continual phase at scale. Each arriving block's module starts from an init (the meta-learned
``theta_0``, or a random init for the comparison) and trains for ``steps`` Adam steps on batches
streamed from the Arrow ray store (a bounded shuffle window; a block is never in memory whole),
with the same optimiser plan for every init. One block is one Ray task (one GPU each when the
cluster has GPUs). Each task checkpoints its module atomically every ``checkpoint_every`` steps
and when done, under ``<run>/blocks/<init>/block-NNNN.pt``: a re-run of the same run skips the
finished blocks and continues an unfinished one from its last checkpoint, on the same stream.

Along the way a task scores a fixed probe of the block's held-out-view rays at steps 1, 2, 4,
... and at regular intervals: the PSNR-vs-step curve of that init on that block.
"""

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
import torch

from mclnf_dist.distributed.fanout import run_tasks
from mclnf_dist.distributed.train_config import BlockTrainingConfig
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params, evaluate
from mclnf_dist.meta.inner_loop import per_sample_loss, sample_losses
from mclnf_dist.meta.meta_learning import mse_to_psnr
from mclnf_dist.nerf.field import RadianceFieldConfig, pack_rays
from mclnf_dist.nerf.sampling import seeded_jitter
from mclnf_dist.progress import ProgressLog
from mclnf_dist.raystore.stream import stream_block_rays
from mclnf_dist.state import Fingerprint, content_digest, fingerprint, load_state, save_state
from mclnf_dist.storage import filesystem_for, join

COLUMNS = ["origin", "direction", "near", "far", "rgb", "image_id"]


@dataclass
class BlockTask:
    """One block's training: everything a Ray task needs."""

    block: int
    init_name: str
    """``meta`` or ``random``: names the checkpoint folder and the curve."""
    init: Params
    """One-module parameters the block starts from (copied, never modified)."""
    field: RadianceFieldConfig
    train_uri: str
    test_uri: str
    cfg: BlockTrainingConfig
    checkpoint_root: str
    seed: int
    progress: Any = None
    """Where progress lines go: a :class:`ProgressBoard` actor (a Ray task's lines reach the
    driver through it), or None: printed here."""
    report_every_s: float = 15.0
    """Seconds between progress lines (step, rays/s, probe PSNR, ETA)."""


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest progress line of every running block task, collected for the driver (Ray
    tasks' own prints are not forwarded: ``ensure_ray(worker_logs=False)``)."""

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}

    def update(self, key: str, line: str) -> None:
        self.lines[key] = line

    def take(self) -> list[str]:
        """The lines posted since the last call, in task order."""
        lines, self.lines = self.lines, {}
        return [lines[k] for k in sorted(lines)]


def progress_line(task: BlockTask, step: int, start: int, seconds: float, curve: dict) -> str:
    """``block 3 (meta init): step 400/2000, 3,100 rays/s, probe PSNR 21.4 dB, ETA 516 s``."""
    done = step - start
    rate = done * task.cfg.batch_rays / max(seconds, 1e-9)
    eta = (task.cfg.steps - step) * seconds / max(done, 1)
    psnr = f", probe PSNR {curve[max(curve)]:.2f} dB (step {max(curve)})" if curve else ""
    return (
        f"block {task.block} ({task.init_name} init): step {step}/{task.cfg.steps}, "
        f"{rate:,.0f} rays/s{psnr}, ETA {eta:.0f} s"
    )


@dataclass
class BlockResult:
    block: int
    init_name: str
    params: Params
    """One-module trained parameters (CPU)."""
    curve: dict[int, float]
    """Step -> PSNR (dB) on the probe rays."""
    seconds: float
    """Training time of this run (0 for a block a previous run finished)."""
    resumed_from: int
    """Step the run started at (0 fresh, ``steps`` already done)."""


def curve_steps(steps: int, points: int) -> list[int]:
    """1, 2, 4, ... up to ``steps``, plus ``points`` evenly spaced steps, plus ``steps``."""
    powers = [2**i for i in range(int(math.log2(steps)) + 1)] if steps >= 1 else []
    even = [round(steps * (i + 1) / points) for i in range(points)] if points else []
    return sorted({s for s in [*powers, *even, steps] if 1 <= s <= steps})


def lr_at(cfg: BlockTrainingConfig, step: int) -> float:
    """The learning rate of step ``step`` (1-based): exponential decay over the budget."""
    return cfg.lr * cfg.final_lr_fraction ** ((step - 1) / max(cfg.steps - 1, 1))


def checkpoint_path(task: BlockTask) -> str:
    return join(task.checkpoint_root, task.init_name, f"block-{task.block:04d}.pt")


CHECKPOINT = "block checkpoint"


def block_fingerprint(task: BlockTask) -> Fingerprint:
    """What shapes a block's checkpoint: the field, the whole plan and budget (the learning rate
    decays over ``steps``, so a finished block is not continued under a larger budget), the init,
    the data and the stream's seed. ``checkpoint_every`` only says when to save: left out."""
    plan = {k: v for k, v in dataclasses.asdict(task.cfg).items() if k != "checkpoint_every"}
    return fingerprint(
        field=task.field,
        block=plan,
        init=content_digest(task.init),
        data=task.train_uri,
        probe=task.test_uri,
        seed=task.seed,
    )


def load_checkpoint(task: BlockTask) -> dict | None:
    """The block's checkpoint (None: none yet), refused when made under other settings."""
    fs, path = filesystem_for(checkpoint_path(task))
    if not fs.exists(path):
        return None
    return load_state(checkpoint_path(task), CHECKPOINT, block_fingerprint(task))


def save_checkpoint(task: BlockTask, state: dict) -> None:
    save_state(checkpoint_path(task), CHECKPOINT, state, block_fingerprint(task))


def probe_batch(task: BlockTask, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed sample of the block's held-out-view rays: x (1, P, 8), y (1, P, 3)."""
    stream = stream_block_rays(
        task.test_uri,
        task.block,
        batch_size=task.cfg.probe_rays,
        shuffle_buffer=max(task.cfg.probe_rays, task.cfg.shuffle_buffer),
        seed=task.seed,
        columns=COLUMNS,
    )
    batch = next(stream, None)
    if batch is None:
        raise MclnfError(
            f"block {task.block} has no held-out-view rays in {task.test_uri} to score it on "
            "(more views, a larger image size, or fewer blocks)"
        )
    x = pack_rays(batch["origin"], batch["direction"], batch["near"], batch["far"])
    return x[None].to(device), batch["rgb"][None].to(device)


@torch.no_grad()
def probe_psnr(field: RadianceFieldConfig, params: Params, probe: tuple) -> float:
    x, y = probe
    prediction = evaluate(field.for_evaluation(), params, x).clamp(0.0, 1.0)
    return float(mse_to_psnr(per_sample_loss(prediction, y).mean()))


def uses_bf16(cfg: BlockTrainingConfig, device: torch.device) -> bool:
    """Whether block training runs its forward pass under bf16 autocast (``cfg.precision``)."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def train_block(
    task: BlockTask,
    device: torch.device | None = None,
    batches: Iterator[dict[str, torch.Tensor]] | None = None,
    on_step: Callable[[int, Params, float], None] | None = None,
) -> BlockResult:
    """Train one block's module (resuming from its checkpoint); see the module docstring.

    Args:
        batches: where training rays come from; default the block's stream from the ray store
            (``bench/block_training.py`` passes rays held in memory to compare).
        on_step: called after every step as ``on_step(step, params, training seconds so far)``
            (``bench/field_table.py`` keeps snapshots at step and time marks); its own time is
            not counted as training.
    """
    with seeded_jitter(task.seed) as jitter:  # the samples' jitter: one stream per block task
        return train_block_with(task, jitter, device, batches, on_step)


def train_block_with(
    task: BlockTask,
    jitter: torch.Generator,
    device: torch.device | None,
    batches: Iterator[dict[str, torch.Tensor]] | None,
    on_step: Callable[[int, Params, float], None] | None,
) -> BlockResult:
    """:func:`train_block` with its jitter stream (restored from and saved to checkpoints)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = task.cfg
    state = load_checkpoint(task)
    if state is not None and state["step"] >= cfg.steps:
        params = {k: v.clone() for k, v in state["params"].items()}
        return BlockResult(task.block, task.init_name, params, state["curve"], 0.0, cfg.steps)
    start = 0 if state is None else state["step"]
    source = state["params"] if state is not None else task.init
    params = {k: v.detach().to(device).clone().requires_grad_() for k, v in source.items()}
    adam = torch.optim.Adam(list(params.values()), lr=cfg.lr)
    curve: dict[int, float] = {}
    if state is not None:
        adam.load_state_dict(state["adam"])
        curve = dict(state["curve"])
        if "jitter" in state:
            jitter.set_state(state["jitter"])
    stream = batches or stream_block_rays(
        task.train_uri,
        task.block,
        batch_size=cfg.batch_rays,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=task.seed,
        epochs=None,
        drop_last=True,
        columns=COLUMNS,
    )
    for _ in range(start):  # continue the same stream where the checkpoint left it
        next(stream)
    probe = probe_batch(task, device)
    bf16 = uses_bf16(cfg, device)
    scored = set(curve_steps(cfg.steps, cfg.curve_points))
    started = last_report = time.perf_counter()
    local_log = ProgressLog("blocks")  # lines of a block trained in this process (no actor)
    for step in range(start + 1, cfg.steps + 1):
        batch = next(stream)
        image = batch["image_id"] if task.field.appearance else None  # its own code
        rays = batch["origin"], batch["direction"], batch["near"], batch["far"]
        x = pack_rays(*rays, image)[None]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = sample_losses(task.field, params, x.to(device), batch["rgb"][None].to(device))
        for group in adam.param_groups:
            group["lr"] = lr_at(cfg, step)
        adam.zero_grad(set_to_none=True)
        loss.mean().backward()
        adam.step()
        if on_step is not None:
            paused = time.perf_counter()
            on_step(step, params, paused - started)
            started += time.perf_counter() - paused
        if step in scored:
            curve[step] = probe_psnr(task.field, params, probe)
        now = time.perf_counter()
        if now - last_report >= task.report_every_s and step < cfg.steps:
            line = progress_line(task, step, start, now - started, curve)
            if task.progress is None:
                local_log.info(line)
            else:
                task.progress.update.remote(f"{task.init_name}-{task.block:06d}", line)
            last_report = now
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(
                task,
                {
                    "step": step,
                    "params": {k: v.detach().cpu() for k, v in params.items()},
                    "adam": adam.state_dict(),
                    "curve": curve,
                    "jitter": jitter.get_state(),
                },
            )
    trained = {k: v.detach().cpu() for k, v in params.items()}
    seconds = time.perf_counter() - started
    return BlockResult(task.block, task.init_name, trained, curve, seconds, start)


def train_blocks(tasks: list[BlockTask], log: ProgressLog, parallel: bool) -> list[BlockResult]:
    """Train every task's block as a Ray task (one GPU each when the cluster has GPUs); a line per
    finished block (rays/s, probe PSNR first -> last, how many blocks remain)."""
    gpus = 1.0 if parallel and cluster_gpus() > 0 else 0.0
    results: list[BlockResult | None] = [None] * len(tasks)
    show, every = None, min((task.report_every_s for task in tasks), default=15.0)
    if parallel:
        board = ProgressBoard.remote()
        tasks = [dataclasses.replace(task, progress=board) for task in tasks]

        def show() -> None:
            for line in ray.get(board.take.remote()):
                log.info(line)

    calls = [(task,) for task in tasks]
    fanned = run_tasks(train_block, calls, parallel, 1, gpus, on_idle=show, idle_s=every)
    for done, (index, result) in enumerate(fanned, 1):
        results[index] = result
        task, curve = tasks[index], result.curve
        trained = task.cfg.steps - result.resumed_from
        if trained == 0:
            speed = "done in an earlier run"
        else:
            speed = f"{trained * task.cfg.batch_rays / max(result.seconds, 1e-9):,.0f} rays/s"
        first, last = curve[min(curve)], curve[max(curve)]
        log.info(
            f"block {task.block} ({task.init_name} init): {speed}, held-out probe PSNR "
            f"{first:.2f} -> {last:.2f} dB; {done}/{len(tasks)} blocks"
        )
    return results


def cluster_gpus() -> float:
    """GPUs of the Ray cluster (0 when Ray is not running)."""
    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0
