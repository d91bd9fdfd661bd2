"""Meta-training episodes of a city, streamed from the Arrow ray store (no Ray needed here).

One :class:`BlockRayEpisodes` feeds :func:`~mclnf_dist.meta.outer_loop.meta_train_loop` in a
Ray Train worker (its share of the meta-training blocks) and in a city sweep trial (all of them,
as the one worker of a one-worker job): the same streams, the same seeds, the same episodes.

Leak-free: a ray is stored in every block it crosses, so a meta block's stored rays include rays
of the held-out blocks. The streams drop every ray that crosses an avoided block (every block
not meta-trained on: :attr:`~mclnf_dist.city.data.CityData.non_meta_blocks`), so
meta-training never sees a ray of a block it is evaluated on; :func:`meta_training_overlap`
measures that on the rays the streams draw.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.meta_learning import Episode, MetaConfig, block_episode
from mclnf_dist.nerf.field import pack_rays
from mclnf_dist.raystore.exclusion import GEOMETRY_COLUMNS, RaysAvoiding, crossing_mask

EPISODE_COLUMNS = [*GEOMETRY_COLUMNS, "rgb"]
"""An episode's packed rays and colours, and ``time``: what checking a drawn ray's blocks needs."""


def worker_seed(seed: int, rank: int) -> int:
    """The seed of worker ``rank``'s streams and sample jitter (rank 0 of 1 in a sweep trial)."""
    return seed * 1000 + rank


def assigned_blocks(blocks: list[int], rank: int, world: int) -> list[int]:
    """Round-robin share of ``blocks`` for worker ``rank`` of ``world``."""
    return blocks[rank::world]


class BlockRayEpisodes:
    """Every round, the next ``2n`` rays of each block (streamed, shuffled, forever): the first
    ``n`` adapt, the other ``n`` score (:func:`~mclnf_dist.meta.meta_learning.block_episode`).

    Args:
        data_uri: the ray store (local path or ``s3://``).
        blocks: the blocks this stream draws from (each becomes a task, or an OML stage).
        rays_per_task: ``n``.
        seed: stream order (:func:`worker_seed`).
        schedule: ``modular`` (maml, mod, mim) or ``sequential`` (oml).
        device: where episodes are placed.
        avoid_blocks: no ray that crosses one of these blocks is ever drawn (the blocks that are
            not meta-trained on); a block left with no ray is one :class:`MclnfError` line.
    """

    def __init__(
        self,
        data_uri: str,
        blocks: list[int],
        rays_per_task: int,
        seed: int,
        schedule: str,
        meta: MetaConfig,
        device: torch.device,
        *,
        avoid_blocks: Sequence[int],
    ) -> None:
        self.n, self.schedule, self.meta, self.device = rays_per_task, schedule, meta, device
        self.streams = [
            episode_stream(data_uri, block, avoid_blocks, rays_per_task, seed) for block in blocks
        ]

    def next_episode(self, theta0: Params) -> Episode:
        xs, ys = [], []
        for stream in self.streams:
            batch = next(stream)
            xs.append(pack_rays(batch["origin"], batch["direction"], batch["near"], batch["far"]))
            ys.append(batch["rgb"])
        x, y = torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)  # (B, 2n, 8/3)
        return block_episode(self.schedule, self.meta, theta0, x, y, self.n)

    def skip(self, rounds: int) -> None:
        """Draw and drop ``rounds`` episodes' rays: a resumed run continues the same streams."""
        for _ in range(rounds):
            for stream in self.streams:
                next(stream)


def episode_stream(
    data_uri: str,
    block: int,
    avoid_blocks: Sequence[int],
    rays_per_task: int,
    seed: int,
    extra_columns: Sequence[str] = (),
) -> RaysAvoiding:
    """The stream of ``block`` that :class:`BlockRayEpisodes` draws from: batches of
    ``2 * rays_per_task`` rays, none crossing ``avoid_blocks``. ``extra_columns`` (e.g. the rays'
    ``image_id`` and ``pixel``, to check them) are read too; the draws are the same."""
    columns = [*EPISODE_COLUMNS, *extra_columns]
    return RaysAvoiding(data_uri, block, avoid_blocks, 2 * rays_per_task, seed, columns)


@dataclass(frozen=True)
class MetaOverlap:
    """What :func:`meta_training_overlap` found in the meta-training streams."""

    overlap_fraction: float
    """Drawn rays that cross an avoided (held-out) block / drawn rays: 0 when leak-free."""
    excluded_fraction: float
    """Rays the streams read and dropped for crossing an avoided block / rays read."""
    rays_drawn: int
    rays_read: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def meta_training_overlap(
    data_uri: str,
    blocks: list[int],
    avoid_blocks: Sequence[int],
    rays_per_task: int,
    seed: int,
    workers: int,
    rounds: int,
) -> MetaOverlap:
    """How many rays meta-training draws that cross an avoided (held-out) block: 0 when leak-free.

    Replays the first ``rounds`` rounds of every block's episode stream exactly as the Train
    workers draw them (block ``blocks[i]`` belongs to rank ``i % workers``, with that rank's
    :func:`worker_seed`; a sweep trial is rank 0 of 1) and checks each drawn ray against the
    ingest geometry. Also counts the rays the streams read and dropped for crossing an avoided
    block (informative: how much of the meta blocks' data leak-freedom costs).
    """
    world = max(1, workers)
    drawn = crossing = read = kept = 0
    for index, block in enumerate(blocks):
        stream = episode_stream(
            data_uri, block, avoid_blocks, rays_per_task, worker_seed(seed, index % world)
        )
        batches = [next(stream) for _ in range(rounds)]
        rays = {c: torch.cat([b[c] for b in batches]) for c in GEOMETRY_COLUMNS}  # one check
        drawn += len(rays["near"])
        crossing += int(crossing_mask(stream.manifest, rays, avoid_blocks).sum())
        read, kept = read + stream.rays_read, kept + stream.rays_kept
    return MetaOverlap(crossing / max(drawn, 1), (read - kept) / max(read, 1), drawn, read)
