"""The one outer loop of meta-training: episodes in, meta-gradients out, ``theta_0`` updated.

Every meta-training in the product runs :func:`meta_train_loop`: the signals job, each Ray Train
worker of the city job, and every sweep trial. What differs is only where the episodes come from
(:class:`EpisodeSource`: signals in memory, or a city's rays streamed from the Arrow store) and
who owns ``theta_0`` (:class:`ParameterStore`: :class:`LocalStore`, an Adam in this process, or
the meta-init server shared by all Train workers). So a sweep tunes the code path the job runs.
"""

import time
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from mclnf_dist.fields.stacked_mlp import FieldConfig, Params
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import (
    Episode,
    MetaConfig,
    OuterOptimizer,
    meta_gradient,
    signal_episode,
)


class EpisodeSource(Protocol):
    """Where meta-training tasks come from (a stream: each call draws the next batch)."""

    def next_episode(self, theta0: Params) -> Episode: ...


class ParameterStore(Protocol):
    """Who owns ``theta_0`` and applies meta-gradients to it."""

    def pull(self) -> tuple[int, Params]:
        """(version = completed rounds, ``theta_0`` to compute the next meta-gradient on)."""
        ...

    def push(self, version: int, grads: Params, metrics: dict[str, float]) -> None:
        """Offer a meta-gradient computed on ``version``; returns once ``version + 1`` exists."""
        ...


class LocalStore:
    """``theta_0`` and its outer Adam in this process (signals, sweep trials, tests)."""

    def __init__(self, theta0: Params, lr: float, grad_clip: float) -> None:
        self.outer = OuterOptimizer(theta0, lr, grad_clip)
        self.version = 0

    def pull(self) -> tuple[int, Params]:
        return self.version, self.outer.theta0

    def push(self, version: int, grads: Params, metrics: dict[str, float]) -> None:
        metrics["grad_norm"] = self.outer.step(grads)
        self.version += 1

    def params(self) -> Params:
        return self.outer.params()

    def state_dict(self) -> dict:
        return {"version": self.version, **self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.outer.load_state_dict(state)
        self.version = state["version"]


def meta_train_loop(
    field: object,
    meta: MetaConfig,
    fim: FimConfig | None,
    store: ParameterStore,
    episodes: EpisodeSource,
    rounds: int,
    on_round: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Meta-train until the store's version reaches ``rounds`` (resumes from its version).

    Args:
        field: a :class:`~mclnf_dist.fields.stacked_mlp.FieldConfig` or a radiance field config.
        on_round: called with (completed rounds, metrics) after every round (progress, tracking,
            validation, checkpoints).

    Returns:
        This process's per-round metrics (``outer_loss``, ``outer_psnr``, ``step_time_s``, and
        what the store adds, e.g. ``grad_norm``).
    """
    history = []
    while True:
        version, theta0 = store.pull()
        if version >= rounds:
            return history
        started = time.perf_counter()
        episode = episodes.next_episode(theta0)
        grads, metrics = meta_gradient(field, meta, fim, theta0, episode)
        metrics["step_time_s"] = time.perf_counter() - started
        store.push(version, grads, metrics)
        history.append(metrics)
        if on_round is not None:
            on_round(version + 1, metrics)


class SignalEpisodes:
    """Random meta-batches of signals held in memory: coords (T, n, d), values (S, T, n, C).

    Draws come from ``generator`` (a CPU generator: the same batches on any device).
    """

    def __init__(
        self,
        schedule: str,
        meta: MetaConfig,
        coords: Tensor,
        values: Tensor,
        generator: torch.Generator,
    ) -> None:
        self.schedule, self.meta = schedule, meta
        self.coords, self.values, self.generator = coords, values, generator

    def next_episode(self, theta0: Params) -> Episode:
        count = self.values.shape[0]
        batch = torch.randperm(count, generator=self.generator)[: self.meta.meta_batch_size]
        values, coords = self.values[batch.to(self.values.device)], self.coords
        rows, n = self.meta.rows_per_segment, coords.shape[1]
        if 0 < rows < n:  # the same random rows of every segment, for context and query
            pick = torch.randperm(n, generator=self.generator)[:rows].to(coords.device)
            coords, values = coords[:, pick], values[:, :, pick]
        return signal_episode(self.schedule, self.meta, theta0, coords, values)


def meta_train(
    schedule: str,
    field: FieldConfig,
    meta: MetaConfig,
    fim: FimConfig | None,
    theta0: Params,
    coords: Tensor,
    values: Tensor,
    seed: int = 0,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Params, list[dict[str, float]]]:
    """Meta-train ``theta_0`` on signals in this process for ``meta.outer_steps`` rounds.

    Args:
        coords: (T, n, d) segment coordinates. values: (S, T, n, C) all training signals.
        on_step: called with (step, metrics) after every outer step (progress, tracking).

    Returns:
        (meta-learned ``theta_0``, per-step metrics).
    """
    store = LocalStore(theta0, meta.outer_lr, meta.grad_clip)
    episodes = SignalEpisodes(schedule, meta, coords, values, torch.Generator().manual_seed(seed))
    callback = None if on_step is None else (lambda done, metrics: on_step(done - 1, metrics))
    history = meta_train_loop(field, meta, fim, store, episodes, meta.outer_steps, callback)
    return store.params(), history
