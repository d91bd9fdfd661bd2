"""The protocol's fairness rules: one plan, the same rows per signal per step, clamped scores."""

import dataclasses

import pytest
import torch

from mclnf_dist.evaluation.protocol import MethodContext, SignalScorer, evaluate_method
from mclnf_dist.fields.stacked_mlp import FieldConfig, init_params
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.methods import METHODS, get_method
from mclnf_dist.signals.segments import grid_coords, grid_segments
from mclnf_dist.signals.signal_set import SignalSet


def tiny_signals(num: int = 2, size: int = 8) -> SignalSet:
    coords = grid_coords((size, size))
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(num, size * size, 1, generator=generator)
    return SignalSet(
        modality="image",
        names=[f"s{i}" for i in range(num)],
        coords=coords,
        values=values,
        grid_shape=(size, size),
        segment_index=grid_segments((size, size), (2, 2)),
    )


def context(name: str, adapt: AdaptConfig, field: FieldConfig | None = None) -> MethodContext:
    field = field or FieldConfig(width=16, depth=3)
    init = init_params(field, 2, 1, 1, torch.Generator().manual_seed(0))
    meta = MetaConfig(inner_steps=2, inner_lr=0.05)
    return MethodContext(get_method(name), field, init, meta, FimConfig(), adapt)


def test_every_method_adapts_with_the_same_plan():
    adapt = AdaptConfig(max_steps=8, adam_lr=3e-3, sgd_steps=2)
    plans = {name: context(name, adapt).plan() for name in METHODS}
    assert len({(p.sgd_steps, p.sgd_lr, p.adam_lr) for p in plans.values()}) == 1
    assert plans["random"].sgd_steps == 2 and plans["mod"].adam_lr == 3e-3


@pytest.mark.parametrize(
    ("name", "expected"), [("random", 1024), ("maml", 1024), ("mod", 256), ("finetune", 256)]
)
def test_rows_per_step_are_per_signal_whatever_the_method(name, expected):
    """One network takes the signal's whole batch; each of 4 modules (or a sequential method on
    its current segment, for 4x the steps) a quarter: the same rows per signal per step."""
    ctx = context(name, AdaptConfig(batch_size=1024))
    whole = ctx.spec.test_schedule == "offline"
    assert ctx.rows_per_step(4, whole_signal=whole) == expected
    assert context(name, AdaptConfig(batch_size=0)).rows_per_step(4, whole) == 0


def test_predictions_are_clamped_to_the_value_range_before_psnr():
    """A field whose output is 2.0 everywhere, scored on an all-ones signal, is perfect once
    clamped to [0, 1] (PSNR at the 1e-12 floor, 120 dB); unclamped it would score 0 dB."""
    signals = tiny_signals()
    signals = dataclasses.replace(signals, values=torch.ones_like(signals.values))
    field = FieldConfig(width=16, depth=3, output_offset=2.0)
    ctx = context("mod", AdaptConfig(max_steps=1), field)
    params = {k: torch.zeros_like(v) for k, v in ctx.init.items()}  # expands to every module
    measured = SignalScorer(signals).measure(ctx, params)
    assert measured.psnr == pytest.approx(120.0)
    assert float(measured.prediction.max()) == 1.0


def test_mod_random_is_modular_from_a_random_init():
    spec = get_method("mod-random")
    assert spec.modular and not spec.meta_learned and not spec.fim
    signals = tiny_signals()
    adapt = AdaptConfig(max_steps=32, adam_lr=1e-2)
    result = evaluate_method(context("mod-random", adapt), signals)
    one_network = evaluate_method(context("random", adapt), signals)
    assert result.params_per_signal == 4 * one_network.params_per_signal
    assert result.curve[32] > result.curve[1] + 3.0  # it learns
    # measured: each earlier segment re-scored once every later one had arrived
    matrix = result.segment_matrix
    assert all(matrix[i][j] == matrix[j][j] for j in range(4) for i in range(j, 4))
    assert result.forgetting == 0.0


class ReadsTheNextModule(SignalScorer):
    """A fault on purpose: segment j is predicted by the sum of modules j and j+1, as a routed
    render reads a later block's module for a ray that crosses it."""

    def measure(self, ctx, params):
        per_segment = {k: v.view(-1, 4, *v.shape[1:]) for k, v in params.items()}
        shifted = {
            k: torch.roll(v, -1, dims=1).reshape(-1, *v.shape[2:]) for k, v in per_segment.items()
        }
        mixed = {k: (params[k] + shifted[k]) / 2 for k in params}
        return super().measure(ctx, mixed)


def test_modular_forgetting_is_measured_so_a_later_module_that_leaks_shows():
    signals = tiny_signals()
    adapt = AdaptConfig(max_steps=16, adam_lr=1e-2)
    result = evaluate_method(
        context("mod-random", adapt), signals, None, ReadsTheNextModule(signals)
    )
    assert result.forgetting != 0.0
    matrix = result.segment_matrix
    assert matrix[3][0] != matrix[0][0]  # segment 0's score moved when segment 1 arrived
