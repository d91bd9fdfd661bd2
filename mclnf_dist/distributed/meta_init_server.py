"""The meta-init server: a named, restartable Ray actor that owns ``theta_0``.

It holds ``theta_0``, the outer Adam state and a version number (= completed meta-rounds).

* ``publish()`` puts ``theta_0`` in the object store ONCE per version and hands every worker the
  same reference (one copy per node, not one per worker).
* ``push(rank, version, grads)`` gathers meta-gradients. Synchronous mode (default): when every
  expected rank has pushed for the current version, the average is applied, the version advances
  and a checkpoint is written atomically. Gradients are keyed by rank, so a restarted worker that
  pushes again for the same round replaces its earlier gradient instead of counting twice.
  Asynchronous mode: each gradient is applied on arrival if it is at most ``max_staleness``
  versions old (bounded staleness), else rejected.
* On (re)start the actor restores from the newest checkpoint at its storage URI, so its death loses
  at most the round in flight; Ray restarts it (``max_restarts=-1``) and retries callers' calls.
"""

import asyncio
import time
from dataclasses import dataclass

import ray
import torch

from mclnf_dist.distributed.checkpoints import CheckpointStore
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.meta_learning import OuterOptimizer
from mclnf_dist.state import Fingerprint


@dataclass(frozen=True)
class PushOutcome:
    """What became of a worker's meta-gradient."""

    accepted: bool
    """False: it was computed on a version too old (it is dropped; the worker pulls again)."""
    version: int
    """The server's version after the push."""


@dataclass(frozen=True)
class ServerStatus:
    """The server's state for the driver: how far it is and every round's averaged metrics."""

    version: int
    done: bool
    """The version has reached the run's total rounds."""
    publish_count: int
    """How often ``theta_0`` was put in the object store (once per version at most)."""
    history: list[dict[str, float]]


class MetaInitServerImpl:
    """The actor's logic (a plain class, so it is testable without Ray)."""

    def __init__(
        self,
        theta0: Params | None,
        outer_lr: float,
        grad_clip: float,
        storage_uri: str,
        num_workers: int,
        total_rounds: int,
        asynchronous: bool = False,
        max_staleness: int = 1,
        fingerprint: Fingerprint | None = None,
    ) -> None:
        self.store = CheckpointStore(storage_uri, fingerprint=fingerprint)
        self.num_workers, self.total_rounds = num_workers, total_rounds
        self.asynchronous, self.max_staleness = asynchronous, max_staleness
        self.version = 0
        self.history: list[dict[str, float]] = []
        restored = self.store.load_latest()
        if restored is None and theta0 is None:
            raise MclnfError(f"{storage_uri}: no meta-init checkpoint to start the server from")
        if restored is not None:
            self.version, state = restored
            self.outer = OuterOptimizer(state["outer"]["theta0"], outer_lr, grad_clip)
            self.outer.load_state_dict(state["outer"])
            self.history = state.get("history", [])
        else:
            self.outer = OuterOptimizer(theta0, outer_lr, grad_clip)
            self.checkpoint()
        self.pending: dict[int, tuple[Params, dict[str, float]]] = {}
        self.published: tuple[int, ray.ObjectRef] | None = None
        self.publish_count = 0
        self.round_started = time.perf_counter()

    def checkpoint(self) -> None:
        state = {"outer": self.outer.state_dict(), "history": self.history}
        self.store.save(self.version, state)

    def publish(self) -> tuple[int, list]:
        """(version, [ref of theta_0]); the list keeps Ray from resolving the reference."""
        if self.published is None or self.published[0] != self.version:
            self.published = (self.version, ray.put(self.outer.params()))
            self.publish_count += 1
        return self.version, [self.published[1]]

    def push(
        self, rank: int, version: int, grads: Params, metrics: dict[str, float]
    ) -> PushOutcome:
        """Offer one worker's meta-gradient for ``version``; returns what became of it."""
        if self.asynchronous:
            if self.version - version > self.max_staleness:
                return PushOutcome(False, self.version)
            self.apply([(grads, metrics)])
            return PushOutcome(True, self.version)
        if version != self.version:
            return PushOutcome(False, self.version)
        self.pending[rank] = (grads, metrics)
        if len(self.pending) >= self.num_workers:
            self.apply(list(self.pending.values()))
            self.pending.clear()
        return PushOutcome(True, self.version)

    def apply(self, contributions: list[tuple[Params, dict[str, float]]]) -> None:
        grads = {
            k: torch.stack([g[k] for g, _ in contributions]).mean(0) for k in contributions[0][0]
        }
        norm = self.outer.step(grads)
        metrics = {
            k: sum(m[k] for _, m in contributions) / len(contributions) for k in contributions[0][1]
        }
        now = time.perf_counter()
        metrics.update(
            grad_norm=norm, round_time_s=now - self.round_started, contributions=len(contributions)
        )
        self.round_started = now
        self.history.append(metrics)
        self.version += 1
        self.checkpoint()

    def status(self) -> ServerStatus:
        done = self.version >= self.total_rounds
        return ServerStatus(self.version, done, self.publish_count, self.history)

    def params(self) -> Params:
        return self.outer.params()

    def progress(self) -> tuple[int, dict[str, float] | None]:
        """(version, the last round's metrics): what a progress line needs, without history."""
        return self.version, (self.history[-1] if self.history else None)


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class MetaInitServer:
    """Ray actor wrapping :class:`MetaInitServerImpl` (async, so waiting workers don't block)."""

    def __init__(self, **kwargs) -> None:
        """``kwargs``: :class:`MetaInitServerImpl`'s but ``theta0`` (it starts from storage)."""
        self.impl = MetaInitServerImpl(None, **kwargs)
        self.changed = asyncio.Condition()

    async def publish(self) -> tuple[int, list]:
        return self.impl.publish()

    async def push(
        self, rank: int, version: int, grads: Params, metrics: dict[str, float]
    ) -> PushOutcome:
        result = self.impl.push(rank, version, grads, metrics)
        async with self.changed:
            self.changed.notify_all()
        return result

    async def wait_for_version(self, version: int, timeout_s: float = 600.0) -> int:
        """Block until the version reaches ``version`` (the synchronous round barrier)."""
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.impl.version >= version), timeout_s
            )
        return self.impl.version

    async def status(self) -> ServerStatus:
        return self.impl.status()

    async def params(self) -> Params:
        return self.impl.params()

    async def progress(self) -> tuple[int, dict | None]:
        return self.impl.progress()


def start_meta_init_server(
    name: str, namespace: str | None = None, *, theta0: Params, **kwargs
) -> ray.actor.ActorHandle:
    """Create (or join, after a driver restart) the named meta-init server.

    ``theta0`` never becomes a constructor argument: this driver writes the server's round-0
    checkpoint (unless one exists) and the server starts from storage, as a restarted one does.
    Megabytes of constructor arguments would sit in the object store, where a restart may not
    find them (Ray warns, ray#53727). ``kwargs``: :class:`MetaInitServerImpl`'s.
    """
    MetaInitServerImpl(theta0, **kwargs)  # restores, or checkpoints round 0
    return MetaInitServer.options(
        name=name, namespace=namespace, get_if_exists=True, lifetime=None
    ).remote(**kwargs)
