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

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from mclnf_dist.fields.stacked_mlp import (
    FieldConfig,
    Params,
    count_parameters,
    evaluate,
    expand_params,
)
from mclnf_dist.meta.adaptation import AdaptConfig, OptimiserPlan, adapt
from mclnf_dist.meta.ewc import EwcPenalty
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig, head_keys, mse_to_psnr
from mclnf_dist.meta.methods import MethodSpec
from mclnf_dist.nerf.sampling import seeded_jitter
from mclnf_dist.progress import ProgressLog
from mclnf_dist.signals.signal_set import SignalSet


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
    segment_curve: dict[int, list[float]] = field(default_factory=dict)
    """Step budget -> mean PSNR of every segment (e.g. a city's held-out blocks)."""
    final_params: Params | None = field(default=None, repr=False)
    """The adapted parameters at the last budget (to render or save; not serialised)."""

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
            "segment_curve": {str(k): v for k, v in self.segment_curve.items()},
        }


def checkpoint_steps(max_steps: int) -> list[int]:
    """1, 2, 4, ... up to ``max_steps`` (``max_steps`` itself always included)."""
    steps = [2**k for k in range(int(math.log2(max_steps)) + 1)] if max_steps >= 1 else []
    return sorted(set(steps + [max_steps]))


def psnr_per_signal(mse: Tensor) -> Tensor:
    """(S, ...) squared errors -> (S,) PSNR of each signal's mean error."""
    return mse_to_psnr(mse.flatten(1).mean(1))


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
    seed: int = 0
    """The run's seed: its minibatch draws and its sample-jitter stream (:func:`seeded_jitter`),
    so two methods of one configuration and seed train identically."""

    def report(self, step: int, psnr: float, elapsed: float, work_done: float) -> None:
        """A progress line at the larger checkpoints: PSNR so far and the ETA."""
        if self.log is not None and step >= 64:
            eta = elapsed / max(work_done, 1e-9) * (1 - work_done)
            self.log.info(
                f"{self.spec.name}: {step}/{self.adapt.max_steps} steps, "
                f"PSNR {psnr:.2f} dB, ETA {eta:.0f}s"
            )

    def plan(self) -> OptimiserPlan:
        """The one plan every method adapts with (methods differ in init, modules and loss)."""
        return OptimiserPlan(self.adapt.sgd_steps, self.meta.inner_lr, self.adapt.adam_lr)

    def rows_per_step(self, num_segments: int, whole_signal: bool) -> int:
        """Rows per step of one network or module: ``batch_size`` rows per signal per step split
        over the ``num_segments`` modules (or, sequentially, one segment at a time), so every
        method sees the same data per step; 0 (every row) stays 0."""
        batch = self.adapt.batch_size
        if batch == 0 or whole_signal:
            return batch
        return max(1, batch // num_segments)

    def loss(self) -> FimConfig | None:
        """The test-time adaptation loss: FIM iff the method uses it and ``fim.apply_to`` puts
        it in the inner loop (``inner``/``both``; ``outer`` shapes only meta-training)."""
        if self.spec.fim and self.fim.apply_to in ("inner", "both"):
            return self.fim
        return None

    def scoring_field(self) -> FieldConfig:
        """The field used to measure PSNR: deterministic (a radiance field's jitter is off)."""
        if getattr(self.field, "perturb", False):
            return dataclasses.replace(self.field, perturb=False)
        return self.field

    def trainable(self) -> set[str] | None:
        return head_keys(self.init, self.meta.head_layers) if self.spec.head_only else None


@dataclass
class Measurement:
    """One checkpoint's scores of a set of parameters."""

    psnr: float
    """Mean over signals of the PSNR of the whole (clamped) reconstruction."""
    segments: list[float]
    """Mean PSNR of every scored segment (a city: every block, in arrival order)."""
    prediction: Tensor | None = None
    """(S, T, n, C) clamped predictions per segment (None when the scorer renders images)."""


class Scorer(Protocol):
    """What PSNR is measured on: held-out signals (:class:`SignalScorer`), or a city's held-out
    images rendered through the routed model (:class:`~mclnf_dist.evaluation.city_images.
    RenderedCityScorer`)."""

    def measure(self, ctx: "MethodContext", params: Params) -> Measurement: ...


class SignalScorer:
    """Scores on a SignalSet's segments: every coordinate predicted by its segment's module (or
    the one network), clamped to the values' range [0, 1] before PSNR."""

    def __init__(self, score: SignalSet) -> None:
        self.score = score

    def measure(self, ctx: "MethodContext", params: Params) -> Measurement:
        prediction = segment_predictions(ctx, params, self.score).clamp(0.0, 1.0)
        values = self.score.segment_values()
        mse = (prediction - values).square()  # (S, T, n, C)
        segments = psnr_matrix(prediction, values).mean(0).tolist()
        return Measurement(float(psnr_per_signal(mse).mean()), segments, prediction)


def evaluate_method(
    ctx: MethodContext,
    signals: SignalSet,
    log: ProgressLog | None = None,
    score: SignalSet | Scorer | None = None,
) -> MethodResult:
    """Run the protocol for one method (progress lines to ``log``).

    Args:
        signals: what every method fits (the held-out signals; a city's training-view rays).
        score: what PSNR is measured on: a SignalSet with the same signals and segments, or a
            :class:`Scorer` (a city's held-out images); default ``signals`` itself, as in
            neural-field fitting.
    """
    runner = {"modular": _modular, "offline": _offline, "sequential": _sequential}
    ctx.log = log
    scorer = SignalScorer(score or signals) if not hasattr(score, "measure") else score
    with seeded_jitter(ctx.seed):
        result = runner[ctx.spec.test_schedule](ctx, signals, scorer)
    reference = getattr(scorer, "score", None)
    if (
        reference is not None
        and reference.modality == "image"
        and result.reconstruction is not None
    ):
        result.ssim_last = mean_ssim(result.reconstruction, reference)
    return result


def segment_predictions(ctx: MethodContext, params: Params, score: SignalSet) -> Tensor:
    """(S, T, n, C) predictions of every scored segment, for modular or one-network params."""
    coords = score.segment_coords()  # (T, n, d)
    num, segments = score.num_signals, score.num_segments
    if ctx.spec.modular:
        x = coords.expand(num, *coords.shape).reshape(num * segments, *coords.shape[1:])
    else:
        x = coords.reshape(1, -1, coords.shape[-1]).expand(num, -1, -1)
    out = predict(ctx.scoring_field(), params, x)
    return out.reshape(num, segments, coords.shape[1], out.shape[-1])


class Recorder:
    """Curves of one run: whole-signal PSNR and per-segment PSNR at every checkpoint."""

    def __init__(self, ctx: MethodContext, scorer: Scorer) -> None:
        self.ctx, self.scorer = ctx, scorer
        self.curve: dict[int, float] = {}
        self.segment_curve: dict[int, list[float]] = {}
        self.wall: dict[int, float] = {}
        self.start = time.perf_counter()

    def measure(self, step: int, params: Params, work_done: float | None = None) -> Measurement:
        measured = self.scorer.measure(self.ctx, params)
        self.wall[step] = time.perf_counter() - self.start
        self.curve[step] = measured.psnr
        self.segment_curve[step] = measured.segments
        done = step / self.ctx.adapt.max_steps if work_done is None else work_done
        self.ctx.report(step, self.curve[step], self.wall[step], done)
        return measured

    def result(
        self, params_per_signal: int, matrix, measured: Measurement, final: Params
    ) -> MethodResult:
        reconstruction = None
        if measured.prediction is not None and isinstance(self.scorer, SignalScorer):
            reconstruction = unsegment(measured.prediction, self.scorer.score)
        return MethodResult(
            self.ctx.spec.name,
            self.ctx.spec.group,
            params_per_signal,
            self.curve,
            self.wall,
            matrix,
            reconstruction=reconstruction,
            segment_curve=self.segment_curve,
            final_params=final,
        )


def adapt_all_at_once(
    ctx: MethodContext, x: Tensor, y: Tensor, scorer: Scorer, rows_per_step: int
) -> tuple[Params, Recorder, Measurement]:
    """Adapt every module on its own rows for the whole budget, recording every checkpoint."""
    recorder = Recorder(ctx, scorer)
    checkpoints = set(checkpoint_steps(ctx.adapt.max_steps))
    last: list[Measurement] = []

    def record(step: int, params: Params) -> None:
        if step in checkpoints:
            last[:] = [recorder.measure(step, params)]

    final = adapt(
        ctx.field,
        expand_params(ctx.init, x.shape[0]),
        x,
        y,
        ctx.adapt.max_steps,
        ctx.plan(),
        ctx.loss(),
        ctx.trainable(),
        on_step=record,
        batch_size=rows_per_step,
        seed=ctx.seed,
    )
    return final, recorder, last[0]


def _modular(ctx: MethodContext, signals: SignalSet, scorer: Scorer) -> MethodResult:
    num, segments = signals.num_signals, signals.num_segments
    coords, values = signals.segment_coords(), signals.segment_values()  # (T,n,d), (S,T,n,C)
    x = coords.expand(num, *coords.shape).reshape(num * segments, *coords.shape[1:])
    y = values.reshape(num * segments, *values.shape[2:])
    rows = ctx.rows_per_step(segments, whole_signal=False)
    final, recorder, measured = adapt_all_at_once(ctx, x, y, scorer, rows)
    matrix = arrival_matrix(
        ctx, final, scorer, segments, recorder.segment_curve[ctx.adapt.max_steps]
    )
    return recorder.result(count_parameters(ctx.init) * segments, matrix, measured, final)


def arrival_matrix(
    ctx: MethodContext, final: Params, scorer: Scorer, segments: int, last_row: list[float]
) -> list[list[float | None]]:
    """R[i][j] of modular params, measured: every segment j <= i re-scored with the model as it
    stood once segment i had arrived (modules of segments 0..i trained, later ones still at the
    init). Frozen modules alone do not make forgetting 0: where a prediction reads several
    modules (routed rendering: a ray crosses later blocks), a later module changes an earlier
    segment's score, and this shows it. ``last_row``: the final model's scores (all arrived)."""
    module_segment = torch.arange(next(iter(final.values())).shape[0]) % segments
    init = expand_params(ctx.init, len(module_segment))
    rows = []
    for i in range(segments - 1):
        arrived = (module_segment <= i).to(next(iter(final.values())).device)
        params = {
            k: torch.where(arrived.view(-1, *[1] * (v.dim() - 1)), v, init[k])
            for k, v in final.items()
        }
        scores = scorer.measure(ctx, params).segments
        rows.append([scores[j] if j <= i else None for j in range(segments)])
    return [*rows, list(last_row)]


def _offline(ctx: MethodContext, signals: SignalSet, scorer: Scorer) -> MethodResult:
    num = signals.num_signals
    x, y = signals.coords.expand(num, *signals.coords.shape), signals.values
    rows = ctx.rows_per_step(signals.num_segments, whole_signal=True)
    final, recorder, measured = adapt_all_at_once(ctx, x, y, scorer, rows)
    return recorder.result(count_parameters(ctx.init), None, measured, final)


def _sequential(ctx: MethodContext, signals: SignalSet, scorer: Scorer) -> MethodResult:
    recorder = Recorder(ctx, scorer)
    matrix, measured, final = None, None, None
    budgets = checkpoint_steps(ctx.adapt.max_steps)
    for budget in budgets:
        last = budget == ctx.adapt.max_steps
        final, rows = run_sequence(ctx, signals, budget, scorer if last else None)
        measured = recorder.measure(
            budget, final, sum(b for b in budgets if b <= budget) / sum(budgets)
        )
        if rows is not None:
            matrix = [[v if j <= i else None for j, v in enumerate(r)] for i, r in enumerate(rows)]
    return recorder.result(count_parameters(ctx.init), matrix, measured, final)


def run_sequence(
    ctx: MethodContext, signals: SignalSet, steps: int, scorer: Scorer | None
) -> tuple[Params, list[list[float]] | None]:
    """One network per signal learns the segments in order, ``steps`` steps each.

    Returns the final parameters and, if ``scorer`` is given, the rows ``R[i][:]`` of the segment
    matrix (mean PSNR of every scored segment after learning segment i).
    """
    num = signals.num_signals
    coords, values = signals.segment_coords(), signals.segment_values()
    params = expand_params(ctx.init, num)
    ewc = EwcPenalty(ctx.adapt.ewc_lambda) if ctx.spec.regulariser == "ewc" else None
    replay_x, replay_y = [], []
    generator = torch.Generator().manual_seed(ctx.seed)
    rows = [] if scorer is not None else None
    batch = ctx.rows_per_step(signals.num_segments, whole_signal=False)
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
            batch_size=batch,
            seed=ctx.seed + segment,
        )
        if ewc is not None:
            ewc.consolidate(ctx.field, params, x, y, ctx.adapt.ewc_rows)
        if ctx.spec.regulariser == "replay":
            keep = max(1, int(ctx.adapt.replay_fraction * x.shape[1]))
            chosen = torch.randperm(x.shape[1], generator=generator)[:keep].to(x.device)
            replay_x.append(x[:, chosen])
            replay_y.append(y[:, chosen])
        if rows is not None:
            rows.append(scorer.measure(ctx, params).segments)
    return params, rows


@torch.no_grad()
def predict(field: FieldConfig, params: Params, x: Tensor) -> Tensor:
    """(M, n, C) field values without building a graph."""
    return evaluate(field, params, x)


def psnr_matrix(prediction: Tensor, values: Tensor) -> Tensor:
    """(S, T, n, C) predictions and targets -> (S, T) PSNR of every signal's segments."""
    return mse_to_psnr((prediction - values).square().mean((2, 3)))


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
