"""A block's rays minus every ray that reaches some other blocks: how meta-training stays off
the held-out blocks of a city.

Why it is needed: ingest stores a ray in EVERY block it crosses (the overlap that makes the
seams of neighbouring blocks agree), so one block's stored rays include many training rays of its
neighbours. On the demo city 87-88 % of the training rays of the held-out blocks are also rays of
a meta-training block: meta-training on the meta blocks' stored rays would have seen them.

Which rays reach a block is decided by the very geometry ingest used
(:meth:`~mclnf_dist.scenes.partition.BlockPartition.rays_crossing` with the store's
``samples_per_ray``), on the very numbers it stored (float32 origin, direction, near, far, time),
so "crosses an avoided block" here means "was also stored in that block" at ingest.
"""

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.raystore.store import Manifest, load_manifest
from mclnf_dist.raystore.stream import Batch, batch_rows, stream_block_rays

GEOMETRY_COLUMNS = ["origin", "direction", "near", "far", "time"]
"""The ray columns block membership depends on."""


def crossing_mask(manifest: Manifest, batch: Batch, blocks: Sequence[int]) -> np.ndarray:
    """(B,) bool: the rays of ``batch`` that the ingest of ``manifest``'s store put in any of
    ``blocks`` (``batch`` holds CPU tensors of at least :data:`GEOMETRY_COLUMNS` but ``time``,
    which a time-sliced store needs too)."""
    missing = [c for c in GEOMETRY_COLUMNS[:4] if c not in batch]
    partition = manifest.partition
    if partition.time_slices > 1 and "time" not in batch:
        missing.append("time")
    if missing:
        raise MclnfError(f"rays need columns {missing} to tell which blocks they cross")
    times = batch["time"].numpy() if "time" in batch else None
    return partition.rays_crossing(
        batch["origin"].numpy(),
        batch["direction"].numpy(),
        batch["near"].numpy(),
        batch["far"].numpy(),
        list(blocks),
        times,
        samples_per_ray=int(manifest.options.get("samples_per_ray", 16)),
    )


class RaysAvoiding:
    """Full batches of ``batch_size`` rays of ``block``, forever, none of which crosses a block of
    ``avoid``: the block's shuffled stream (every epoch, in :func:`stream_block_rays` order) with
    those rays dropped, read ahead as far as needed to fill each batch (never the whole block).

    Counts the rays it read (``rays_read``) and kept (``rays_kept``): ``1 - kept / read`` is the
    share of the block's streamed rays that reached an avoided block.

    Raises :class:`MclnfError` naming the block (when the stream is made, or on the first batch
    once a whole epoch is read) if no ray of ``block`` is left.
    """

    def __init__(
        self,
        uri: str,
        block: int,
        avoid: Sequence[int],
        batch_size: int,
        seed: int,
        columns: Sequence[str],
    ) -> None:
        self.uri, self.block, self.batch_size = uri, int(block), batch_size
        self.manifest = load_manifest(uri)
        self.manifest.partition.check_block(self.block)
        self.avoid = sorted({self.manifest.partition.check_block(b) for b in avoid})
        if self.block in self.avoid:
            raise MclnfError(f"block {block} is to be streamed and avoided at once (avoid {avoid})")
        self.columns = list(columns)
        if not self.columns:
            raise MclnfError("columns must name at least one ray column to stream, got none")
        self.total = self.manifest.block_rows.get(self.block, 0)
        self.rays_read = self.rays_kept = 0
        self._pending: list[Batch] = []
        self._pending_rows = 0
        # drop_last off: the stream's first ``total`` rays are exactly one epoch (all the block)
        self._stream = stream_block_rays(
            uri,
            self.block,
            batch_size=batch_size,
            seed=seed,
            epochs=None,
            drop_last=False,
            columns=list(dict.fromkeys([*self.columns, *GEOMETRY_COLUMNS])),
        )

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        while self._pending_rows < self.batch_size:
            if self.rays_kept == 0 and self.rays_read >= self.total:
                raise MclnfError(
                    f"block {self.block} of {self.uri} has no ray left to stream: all its "
                    f"{self.total} rays cross avoided blocks {self.avoid} (choose other "
                    "meta-training blocks, or more blocks per area)"
                )
            batch = next(self._stream)
            keep = torch.from_numpy(~crossing_mask(self.manifest, batch, self.avoid))
            kept = int(keep.sum())
            self.rays_read += len(keep)
            self.rays_kept += kept
            if kept:
                self._pending.append({c: batch[c][keep] for c in self.columns})
                self._pending_rows += kept
        joined = {c: torch.cat([p[c] for p in self._pending]) for c in self.columns}
        out = {c: v[: self.batch_size] for c, v in joined.items()}
        rest = {c: v[self.batch_size :] for c, v in joined.items()}
        self._pending = [rest] if batch_rows(rest) else []
        self._pending_rows = batch_rows(rest)
        return out
