"""The evaluation protocol: every method adapts to held-out signals under the same step budget.

For each method we record the PSNR of the whole reconstruction (mean over signals) at steps
1, 2, 4, ..., ``max_steps`` (budget = steps per segment), the best value and its step, SSIM for
images, and the per-segment matrix ``R[i][j]`` = PSNR on segment j after learning segment i,
from which forgetting = best earlier ``R[.][j]`` minus final ``R[T-1][j]``.

How a budget is spent depends on the method's ``test_schedule``:

* ``modular``: segment i's module adapts from the init on segment i only, and is then frozen.
  Modules are independent, so all adapt in one stacked batch and checkpoints come for free.
* ``offline``: one network per signal sees all coordinates at once (no order, no forgetting).
* ``sequential``: one network per signal learns segment 1 for ``b`` steps, then segment 2, ...
  The curve point at budget ``b`` is a full sequential run with ``b`` steps per segment (twice the
  cost of one run in total), so every point means the same thing as for the modular methods.

All held-out signals are processed together as stacked modules.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mclnf_dist.data.signal_set import SignalSet
from mclnf_dist.fields.stacked_mlp import (
    FieldConfig,
    Params,
    count_parameters,
    evaluate,
    expand_params,
)
from mclnf_dist.meta.adaptation import (
    AdaptConfig,
    EwcPenalty,
    OptimiserPlan,
    adapt,
    reconstruction_mse,
)
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig, head_keys
from mclnf_dist.meta.methods import MethodSpec
from mclnf_dist.progress import ProgressLog


@dataclass
class MethodResult:
    """What one method achieved on the held-out signals."""

    method: str
    group: str
    params_per_signal: int
    curve: dict[int, float]
    """Step budget -> mean PSNR (dB) of the whole reconstruction."""
    wall_time: dict[int, float]
    """Step budget -> seconds of adaptation spent to get there (all signals together)."""
    segment_matrix: list[list[float | None]] | None
    """R[i][j]: mean PSNR on segment j after learning segment i (None: not yet learned)."""
    ssim_last: float | None = None
    reconstruction: Tensor | None = field(default=None, repr=False)
    """(S, N, C) final predictions (for pictures; not serialised)."""

    @property
    def psnr_step1(self) -> float:
        return self.curve[min(self.curve)]

    @property
    def psnr_last(self) -> float:
        return self.curve[max(self.curve)]

    @property
    def best(self) -> tuple[float, int]:
        step = max(self.curve, key=lambda s: self.curve[s])
        return self.curve[step], step

    @property
    def forgetting(self) -> float | None:
        """Mean over segments j < T-1 of best earlier R[i][j] minus final R[T-1][j]."""
        matrix = self.segment_matrix
        if matrix is None or len(matrix) < 2:
            return None
        last = len(matrix) - 1
        drops = [max(matrix[i][j] for i in range(j, last)) - matrix[last][j] for j in range(last)]
        return float(np.mean(drops))

    def time_to_psnr(self, target: float) -> float | None:
        """Adaptation seconds until the curve first reaches ``target`` dB (None: never)."""
        hits = [self.wall_time[s] for s in sorted(self.curve) if self.curve[s] >= target]
        return hits[0] if hits else None

    def summary(self) -> dict:
        best, best_step = self.best
        return {
            "method": self.method,
            "group": self.group,
            "params_per_signal": self.params_per_signal,
            "psnr_step1": self.psnr_step1,
            "psnr_best": best,
            "best_step": best_step,
            "psnr_last": self.psnr_last,
            "ssim_last": self.ssim_last,
            "forgetting": self.forgetting,
            "curve": {str(k): v for k, v in self.curve.items()},
            "wall_time": {str(k): v for k, v in self.wall_time.items()},
            "segment_matrix": self.segment_matrix,
        }


def checkpoint_steps(max_steps: int) -> list[int]:
    """1, 2, 4, ... up to ``max_steps`` (``max_steps`` itself always included)."""
    steps = [2**k for k in range(int(math.log2(max_steps)) + 1)] if max_steps >= 1 else []
    return sorted(set(steps + [max_steps]))


def psnr_per_signal(mse: Tensor) -> Tensor:
    """(S, ...) squared errors -> (S,) PSNR of each signal's mean error."""
    return -10.0 * torch.log10(mse.flatten(1).mean(1).clamp_min(1e-12))


@dataclass
class MethodContext:
    """Everything that fixes how one method adapts."""

    spec: MethodSpec
    field: FieldConfig
    init: Params
    """One-module initialisation (random or meta-learned)."""
    meta: MetaConfig
    fim: FimConfig
    adapt: AdaptConfig
    log: ProgressLog | None = None

    def report(self, step: int, psnr: float, elapsed: float, work_done: float) -> None:
        """A progress line at the larger checkpoints: PSNR so far and the ETA."""
        if self.log is not None and step >= 64:
            eta = elapsed / max(work_done, 1e-9) * (1 - work_done)
            self.log.info(
                f"{self.spec.name}: {step}/{self.adapt.max_steps} steps, "
                f"PSNR {psnr:.2f} dB, ETA {eta:.0f}s"
            )

    def plan(self) -> OptimiserPlan:
        if self.spec.meta_learned:
            sgd_steps = self.adapt.meta_sgd_steps
            if sgd_steps < 0:
                sgd_steps = self.adapt.max_steps
            return OptimiserPlan(sgd_steps, self.meta.inner_lr, self.adapt.adam_lr)
        return OptimiserPlan(0, 0.0, self.adapt.adam_lr)

    def loss(self) -> FimConfig | None:
        return self.fim if self.spec.fim else None

    def trainable(self) -> set[str] | None:
        return head_keys(self.init, self.meta.head_layers) if self.spec.head_only else None


def evaluate_method(
    ctx: MethodContext, signals: SignalSet, log: ProgressLog | None = None
) -> MethodResult:
    """Run the protocol for one method on the held-out ``signals`` (progress lines to ``log``)."""
    runner = {"modular": _modular, "offline": _offline, "sequential": _sequential}
    ctx.log = log
    result = runner[ctx.spec.test_schedule](ctx, signals)
    if signals.modality == "image" and result.reconstruction is not None:
        result.ssim_last = mean_ssim(result.reconstruction, signals)
    return result


def _modular(ctx: MethodContext, signals: SignalSet) -> MethodResult:
    num, segments = signals.num_signals, signals.num_segments
    coords, values = signals.segment_coords(), signals.segment_values()  # (T,n,d), (S,T,n,C)
    x = coords.expand(num, *coords.shape).reshape(num * segments, *coords.shape[1:])
    y = values.reshape(num * segments, *values.shape[2:])
    curve, wall = {}, {}
    checkpoints = set(checkpoint_steps(ctx.adapt.max_steps))
    start = time.perf_counter()

    def record(step: int, params: Params) -> None:
        if step in checkpoints:
            wall[step] = time.perf_counter() - start
            mse = reconstruction_mse(ctx.field, params, x, y).reshape(num, -1)
            curve[step] = float(psnr_per_signal(mse).mean())
            ctx.report(step, curve[step], wall[step], step / ctx.adapt.max_steps)

    init = expand_params(ctx.init, num * segments)
    final = adapt(
        ctx.field,
        init,
        x,
        y,
        ctx.adapt.max_steps,
        ctx.plan(),
        ctx.loss(),
        ctx.trainable(),
        on_step=record,
    )
    prediction = predict(ctx.field, final, x).reshape(num, segments, *y.shape[1:])
    per_segment = psnr_matrix(prediction, values)  # (S, T)
    learned = per_segment.mean(0).tolist()
    matrix = [[learned[j] if j <= i else None for j in range(segments)] for i in range(segments)]
    return MethodResult(
        ctx.spec.name,
        ctx.spec.group,
        count_parameters(ctx.init) * segments,
        curve,
        wall,
        matrix,
        reconstruction=unsegment(prediction, signals),
    )


def _offline(ctx: MethodContext, signals: SignalSet) -> MethodResult:
    num = signals.num_signals
    x, y = signals.coords.expand(num, *signals.coords.shape), signals.values
    curve, wall = {}, {}
    checkpoints = set(checkpoint_steps(ctx.adapt.max_steps))
    start = time.perf_counter()

    def record(step: int, params: Params) -> None:
        if step in checkpoints:
            wall[step] = time.perf_counter() - start
            curve[step] = float(psnr_per_signal(reconstruction_mse(ctx.field, params, x, y)).mean())
            ctx.report(step, curve[step], wall[step], step / ctx.adapt.max_steps)

    final = adapt(
        ctx.field,
        expand_params(ctx.init, num),
        x,
        y,
        ctx.adapt.max_steps,
        ctx.plan(),
        ctx.loss(),
        ctx.trainable(),
        on_step=record,
    )
    prediction = predict(ctx.field, final, x)
    return MethodResult(
        ctx.spec.name,
        ctx.spec.group,
        count_parameters(ctx.init),
        curve,
        wall,
        None,
        reconstruction=prediction,
    )


def _sequential(ctx: MethodContext, signals: SignalSet) -> MethodResult:
    curve, wall = {}, {}
    matrix, prediction = None, None
    budgets = checkpoint_steps(ctx.adapt.max_steps)
    started = time.perf_counter()
    for budget in budgets:
        start = time.perf_counter()
        final, rows = run_sequence(ctx, signals, budget, record=budget == ctx.adapt.max_steps)
        wall[budget] = time.perf_counter() - start
        x = signals.coords.expand(signals.num_signals, *signals.coords.shape)
        mse = reconstruction_mse(ctx.field, final, x, signals.values)
        curve[budget] = float(psnr_per_signal(mse).mean())
        done = sum(b for b in budgets if b <= budget) / sum(budgets)
        ctx.report(budget, curve[budget], time.perf_counter() - started, done)
        if rows is not None:
            matrix = [[float(v) if j <= i else None for j, v in enumerate(r)] for i, r in rows]
            prediction = predict(ctx.field, final, x)
    return MethodResult(
        ctx.spec.name,
        ctx.spec.group,
        count_parameters(ctx.init),
        curve,
        wall,
        matrix,
        reconstruction=prediction,
    )


def run_sequence(
    ctx: MethodContext, signals: SignalSet, steps: int, record: bool
) -> tuple[Params, list[tuple[int, list[float]]] | None]:
    """One network per signal learns the segments in order, ``steps`` steps each.

    Returns the final parameters and, if ``record``, the rows ``(i, R[i][:])`` of the segment
    matrix (mean PSNR of every segment after learning segment i).
    """
    num = signals.num_signals
    coords, values = signals.segment_coords(), signals.segment_values()
    params = expand_params(ctx.init, num)
    ewc = EwcPenalty(ctx.adapt.ewc_lambda) if ctx.spec.regulariser == "ewc" else None
    replay_x, replay_y = [], []
    generator = torch.Generator().manual_seed(0)
    rows = [] if record else None
    for segment in range(signals.num_segments):
        x = coords[segment].expand(num, -1, -1)
        y = values[:, segment]
        train_x, train_y = torch.cat([x, *replay_x], 1), torch.cat([y, *replay_y], 1)
        params = adapt(
            ctx.field,
            params,
            train_x,
            train_y,
            steps,
            ctx.plan(),
            ctx.loss(),
            ctx.trainable(),
            ewc=ewc,
        )
        if ewc is not None:
            ewc.consolidate(ctx.field, params, x, y, ctx.adapt.ewc_batches)
        if ctx.spec.regulariser == "replay":
            keep = max(1, int(ctx.adapt.replay_fraction * x.shape[1]))
            chosen = torch.randperm(x.shape[1], generator=generator)[:keep].to(x.device)
            replay_x.append(x[:, chosen])
            replay_y.append(y[:, chosen])
        if rows is not None:
            all_x = coords.expand(num, *coords.shape).reshape(num, -1, coords.shape[-1])
            prediction = predict(ctx.field, params, all_x).reshape(values.shape)
            rows.append((segment, psnr_matrix(prediction, values).mean(0).tolist()))
    return params, rows


@torch.no_grad()
def predict(field: FieldConfig, params: Params, x: Tensor) -> Tensor:
    """(M, n, C) field values without building a graph."""
    return evaluate(field, params, x)


def psnr_matrix(prediction: Tensor, values: Tensor) -> Tensor:
    """(S, T, n, C) predictions and targets -> (S, T) PSNR of every signal's segments."""
    mse = (prediction - values).square().mean((2, 3))
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def unsegment(segmented: Tensor, signals: SignalSet) -> Tensor:
    """(S, T, n, C) per-segment rows -> (S, N, C) in the signals' coordinate order."""
    flat = segmented.reshape(segmented.shape[0], -1, segmented.shape[-1])
    out = torch.empty_like(flat)
    out[:, signals.segment_index.reshape(-1)] = flat
    return out


def mean_ssim(reconstruction: Tensor, signals: SignalSet) -> float:
    """Mean SSIM (scikit-image) of the reconstructed images against the ground truth."""
    from skimage.metrics import structural_similarity

    shape = (signals.num_signals, *signals.grid_shape, signals.out_features)
    pred = reconstruction.clamp(0, 1).reshape(shape).cpu().numpy()
    true = signals.values.reshape(shape).cpu().numpy()
    scores = [
        structural_similarity(t, p, data_range=1.0, channel_axis=-1, win_size=min(7, *t.shape[:2]))
        for p, t in zip(pred, true, strict=True)
    ]
    return float(np.mean(scores))
