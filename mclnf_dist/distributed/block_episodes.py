"""Meta-training episodes of a city, streamed from the Arrow ray store (no Ray needed here).

One :class:`BlockRayEpisodes` feeds :func:`~mclnf_dist.meta.outer_loop.meta_train_loop` in a
Ray Train worker (its share of the meta-training blocks) and in a city sweep trial (all of them,
as the one worker of a one-worker job): the same streams, the same seeds, the same episodes.
"""

import torch

from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.meta_learning import Episode, MetaConfig, block_episode
from mclnf_dist.nerf.field import pack_rays
from mclnf_dist.raystore.stream import stream_block_rays


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
    ) -> None:
        self.n, self.schedule, self.meta, self.device = rays_per_task, schedule, meta, device
        self.streams = [
            stream_block_rays(
                data_uri,
                block,
                batch_size=2 * rays_per_task,
                seed=seed,
                epochs=None,
                drop_last=True,
                columns=["origin", "direction", "near", "far", "rgb"],
            )
            for block in blocks
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
