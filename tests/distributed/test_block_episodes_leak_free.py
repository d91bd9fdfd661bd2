"""Meta-training never sees a ray that reaches a held-out block.

On the demo city (3x2 blocks, meta-trained on 0-3, blocks 4 and 5 held out; tiny images), ingest
stores a ray in every block it crosses, so many stored rays of the meta blocks reach blocks 4-5.
The episode streams must drop them all, still give full batches, and say so in the numbers the
city report carries. "Reaches a held-out block" is checked here independently of the partition
code: the ingest's 16 points along each ray, each put in its grid cell by floor division of its
ground-plane position (no centroids, no margin: a ray this finds in a held-out cell certainly
crosses that block as ingest defines it).
"""

import dataclasses

import numpy as np
import pytest
import torch

from mclnf_dist.city.data import CityDataConfig, prepare_city
from mclnf_dist.distributed.block_episodes import (
    BlockRayEpisodes,
    meta_training_overlap,
    worker_seed,
)
from mclnf_dist.errors import MclnfError
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.progress import ProgressLog
from mclnf_dist.raystore.exclusion import RaysAvoiding
from mclnf_dist.raystore.ingest import ingest_scene
from mclnf_dist.raystore.store import IngestOptions, load_manifest
from mclnf_dist.raystore.stream import read_block_rays
from mclnf_dist.scenes.partition import BlockPartition, ground_axes

RAYS_PER_TASK = 64


@pytest.fixture(scope="module")
def city(tmp_path_factory, ray_local):
    work = tmp_path_factory.mktemp("leak")
    data = CityDataConfig(work_dir=str(work), image_size=16, views_per_block=3)
    return prepare_city(data, ProgressLog("test"))


def cells_reached(partition: BlockPartition, rays: dict, samples: int = 16) -> np.ndarray:
    """(R, S) bool: ray r has a point (of ``samples`` over [near, far]) in grid cell s."""
    low, high = partition.bounds
    cell = (high - low) / np.array(partition.grid_shape)
    axes = list(ground_axes(partition.up_axis))
    origin, direction = rays["origin"].double().numpy(), rays["direction"].double().numpy()
    near, far = rays["near"].double().numpy(), rays["far"].double().numpy()
    depth = near[:, None] + np.linspace(0, 1, samples) * (far - near)[:, None]  # (R, samples)
    ground = origin[:, None, axes] + depth[..., None] * direction[:, None, axes]  # (R, samples, 2)
    index = np.floor((ground - low) / cell).astype(int)
    index = np.clip(index, 0, np.array(partition.grid_shape) - 1)  # border cells reach out
    block = index[..., 0] * partition.grid_shape[1] + index[..., 1]  # ids: x-major, as ingest
    reached = np.zeros((len(origin), partition.num_blocks), dtype=bool)
    reached[np.arange(len(origin))[:, None], block] = True
    return reached


def reaches(partition: BlockPartition, rays: dict, blocks: list[int]) -> np.ndarray:
    return cells_reached(partition, rays)[:, blocks].any(axis=1)


def test_stored_meta_rays_reach_held_out_blocks_but_episode_streams_never_do(city):
    assert city.meta_blocks == [0, 1, 2, 3] and city.held_out == [4, 5]
    assert city.non_meta_blocks == [4, 5]
    partition = city.partition
    stored = [read_block_rays(city.train_uri, b) for b in city.meta_blocks]
    # (a) the leak without filtering: a sizeable share of the meta blocks' stored rays
    leaking = np.concatenate([reaches(partition, rays, city.held_out) for rays in stored])
    assert leaking.mean() > 0.15, leaking.mean()  # 0.24 on this city
    # the crossing test is the ingest's: every ray stored in a block crosses it
    for block, rays in zip(city.meta_blocks, stored, strict=True):
        args = [rays[k].numpy() for k in ("origin", "direction", "near", "far")]
        assert partition.rays_crossing(*args, [block]).all()

    # (b) what meta-training draws: full batches, none reaching a held-out block
    episodes = BlockRayEpisodes(
        city.train_uri, city.meta_blocks, RAYS_PER_TASK, worker_seed(0, 0), "modular",
        MetaConfig(), torch.device("cpu"), avoid_blocks=city.non_meta_blocks,
    )  # fmt: skip
    for stream, rays in zip(episodes.streams, stored, strict=True):
        rounds = 2 * len(rays["near"]) // (2 * RAYS_PER_TASK) + 1  # more than a whole epoch
        batches = [next(stream) for _ in range(rounds)]
        assert all(len(b["rgb"]) == 2 * RAYS_PER_TASK for b in batches)
        drawn = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        assert not reaches(partition, drawn, city.held_out).any()


def test_avoiding_stream_gives_each_kept_ray_once_per_epoch(city):
    """Filtering drops the crossing rays and nothing else: over one epoch, exactly the block's
    rays that cross no avoided block, each once; the counts say how many were dropped."""
    block, avoid = 3, city.non_meta_blocks
    columns = ["image_id", "pixel", "origin", "direction", "near", "far"]
    rays = read_block_rays(city.train_uri, block, columns)
    args = [rays[k].numpy() for k in ("origin", "direction", "near", "far")]
    kept = ~city.partition.rays_crossing(*args, avoid)
    expected = set(zip(rays["image_id"][kept].tolist(), rays["pixel"][kept].tolist(), strict=True))
    assert 0.2 < 1 - kept.mean() < 0.8  # both kept and dropped rays: the test can fail
    stream = RaysAvoiding(city.train_uri, block, avoid, 50, seed=3, columns=columns)
    batches = [next(stream) for _ in range(-(-len(expected) // 50))]
    image_id, pixel = (torch.cat([b[k] for b in batches]).tolist() for k in ("image_id", "pixel"))
    pairs = list(zip(image_id, pixel, strict=True))
    first_epoch = pairs[: len(expected)]
    assert len(set(first_epoch)) == len(expected) and set(first_epoch) == expected
    dropped = (stream.rays_read - stream.rays_kept) / stream.rays_read
    assert dropped == pytest.approx(1 - kept.mean(), abs=0.05)


def test_meta_training_overlap_is_zero_and_counts_what_was_excluded(city):
    leakage = meta_training_overlap(
        city.train_uri, city.meta_blocks, city.non_meta_blocks, RAYS_PER_TASK, 0, 2, rounds=8
    )
    assert leakage.overlap_fraction == 0.0
    assert leakage.rays_drawn == 4 * 8 * 2 * RAYS_PER_TASK
    stored = [read_block_rays(city.train_uri, b) for b in city.meta_blocks]
    exact = [
        city.partition.rays_crossing(
            *[r[k].numpy() for k in ("origin", "direction", "near", "far")], city.non_meta_blocks
        )
        for r in stored
    ]
    # the streams read a random ~third of each block: the excluded share is near the exact one
    pooled = np.concatenate(exact).mean()
    assert leakage.excluded_fraction == pytest.approx(pooled, abs=0.05)


def test_a_meta_block_left_without_rays_is_one_error_line(city, tmp_path):
    """Blocks 0 and 1 of this partition are one and the same cell: every ray of block 0 crosses
    block 1, so avoiding block 1 leaves block 0 nothing to stream."""
    manifest = load_manifest(city.train_uri)
    first = manifest.partition
    twin = dataclasses.replace(
        first,
        centroids=np.concatenate([first.centroids[:1], first.centroids]),
        grid_shape=(first.num_space_blocks + 1, 1),
    )
    uri = str(tmp_path / "twin")
    ingest_scene(city.scene_root, uri, IngestOptions(split="train", progress=False), twin)
    stream = RaysAvoiding(uri, 0, [1], 64, seed=0, columns=["rgb"])
    with pytest.raises(MclnfError, match=r"block 0 of .* has no ray left to stream") as error:
        next(stream)
    assert "\n" not in str(error.value)
    assert stream.rays_read == load_manifest(uri).block_rows[0] > 0


def ray_rows(signals) -> set[tuple[float, ...]]:
    """Each drawn ray by its origin and direction (one pixel's ray is the same in every block)."""
    return {tuple(round(v, 5) for v in row[:6].tolist()) for row in signals.coords}


def test_validation_never_scores_a_test_view_or_a_fitted_pixel(city):
    from mclnf_dist.city.data import blocks_as_segments, has_own_validation
    from mclnf_dist.jobs.city import CityExperimentConfig
    from mclnf_dist.sweeps.targets import validation_rays

    cfg = CityExperimentConfig()
    cfg.data.fit_rays_per_block, cfg.data.score_rays_per_block = 256, 128
    held = city.held_out
    assert len(held) == 2
    # the demo city has views of its own for validation: neither training nor test views
    assert city.val_uri is not None and has_own_validation(city.scene_root, city.scene_options)
    val = {f.file_path for f in city.load_scene("val").frames}
    others = city.load_scene("train").frames + city.load_scene("test").frames
    assert val and not val & {f.file_path for f in others}
    assert load_manifest(city.val_uri).source["frames"] == len(val)
    # a scene without them: other pixels of the training views, none that any block fits
    fit = blocks_as_segments(city.train_uri, held, 256, cfg.run.seed, "fit")
    no_val = dataclasses.replace(city, val_uri=None)
    score = validation_rays(cfg, no_val, held)
    assert score.coords.shape[0] == 2 * 128 and not ray_rows(score) & ray_rows(fit)
    # "other rays of the same block" alone would score some pixels the other block fits
    other = blocks_as_segments(city.train_uri, held, 128, cfg.run.seed, "v", skip=256)
    assert ray_rows(other) & ray_rows(fit)
