"""City data for the pipeline: the scene (given or a generated demo city), its Arrow ray stores
(train and test views, cut into the same blocks), and blocks as segments for the protocol.

A city is evaluated with the same protocol as any signal: the blocks in arrival order are the
segments, a ray (8 numbers, see :mod:`mclnf_dist.nerf.field`) is a coordinate and its pixel
colour the value. Training-view rays are what methods fit; held-out-view rays are what is scored.
"""

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mclnf_dist.config import NonNegativeInt, PositiveInt
from mclnf_dist.config_rules import cross_field_rule, duplicates
from mclnf_dist.errors import MclnfError
from mclnf_dist.nerf.field import Box, RadianceFieldConfig, field_for_scene, pack_rays
from mclnf_dist.progress import ProgressLog
from mclnf_dist.raystore.ingest import ingest_scene
from mclnf_dist.raystore.store import IngestOptions, load_manifest
from mclnf_dist.raystore.stream import read_block_rays
from mclnf_dist.scenes.demo_city import CityConfig, make_city
from mclnf_dist.scenes.partition import BlockPartition
from mclnf_dist.scenes.scene import (
    Scene,
    SceneReading,
    check_scene,
    is_cut_out,
    load_scene,
    scene_options,
)
from mclnf_dist.signals.signal_set import SignalSet


@dataclass
class CityDataConfig(SceneReading):
    """Where the city comes from, how a given scene is read (:class:`SceneReading`: downscale,
    hold-out, missing images) and cut into blocks, which blocks do what."""

    scene: str = ""
    """A transforms.json scene folder; empty: generate the demo city into ``work_dir``."""
    data_uri: str = ""
    """Root of the ray stores (local path or ``s3://...``); empty: ``<work_dir>/rays``."""
    work_dir: str = "outputs/city"
    """Local folder for the generated city, results, PNGs and the saved city model."""
    blocks_x: PositiveInt = 3
    """Blocks along x (the demo city is generated with this many city blocks too)."""
    blocks_y: PositiveInt = 2
    """Blocks along y."""
    image_size: PositiveInt = 40
    """Demo city: image width and height in pixels."""
    views_per_block: PositiveInt = 10
    """Demo city: aerial and street views per block (each)."""
    meta_blocks: tuple[NonNegativeInt, ...] = ()
    """Blocks whose rays meta-train ``theta_0``; empty: the first two thirds."""
    block_order: tuple[NonNegativeInt, ...] = ()
    """Arrival order of blocks in the continual phase; empty: 0, 1, 2, ..."""
    fit_rays_per_block: PositiveInt = 4096
    """Training-view rays per block that a method fits in the continual phase."""
    score_rays_per_block: PositiveInt = 2048
    """Validation rays per block of a sweep trial: training-view pixels disjoint from the ones
    it fits (held-out views are test data; the job scores full held-out images through the
    routed model)."""
    seed: NonNegativeInt = 0
    """Seed of the demo city (its layout, colours and cameras)."""


@cross_field_rule(CityDataConfig)
def blocks_listed_once(cfg: CityDataConfig, prefix: str) -> str | None:
    """A block arrives once, and is meta-trained on once."""
    for name in ("block_order", "meta_blocks"):
        if repeated := duplicates(getattr(cfg, name)):
            return (
                f"{prefix}{name}={list(getattr(cfg, name))} lists block(s) {repeated} more than "
                "once (expected each block at most once)"
            )
    return None


def blocks_problem(cfg: CityDataConfig, prefix: str = "") -> str | None:
    """Block ids of ``block_order`` / ``meta_blocks`` beyond the ``blocks_x * blocks_y`` grid the
    job cuts (not for ``--extend``, whose partition is the model's plus the new grid)."""
    count = cfg.blocks_x * cfg.blocks_y
    for name in ("block_order", "meta_blocks"):
        if beyond := [b for b in getattr(cfg, name) if b >= count]:
            return (
                f"{prefix}{name}={list(getattr(cfg, name))}: block(s) {beyond} do not exist "
                f"(expected ids 0..{count - 1} of the {cfg.blocks_x}x{cfg.blocks_y} grid "
                f"{prefix}blocks_x x {prefix}blocks_y)"
            )
    return None


@dataclass
class CityData:
    scene_root: str
    train_uri: str
    test_uri: str
    partition: BlockPartition
    meta_blocks: list[int]
    block_order: list[int]
    scene_options: dict = field(default_factory=dict)
    """How the scene was read at ingest (downscale, hold-out, box): read it the same way again."""
    val_uri: str | None = None
    """Rays of the scene's validation views, when it has views that are neither training nor
    test views (the generated city's ``val`` split); None: it has none."""

    def load_scene(self, split: str) -> Scene:
        """The scene's ``split`` as the ray stores hold it (same downscale, hold-out and box)."""
        return load_scene(self.scene_root, split, **self.scene_options)

    @property
    def held_out(self) -> list[int]:
        """Blocks never seen in meta-training (where the headline comparison is made)."""
        return [b for b in self.block_order if b not in self.meta_blocks]

    @property
    def non_meta_blocks(self) -> list[int]:
        """Every block of the partition that is not meta-trained on (held out or not in the order):
        no meta-training ray may cross one, since a ray is stored in every block it crosses."""
        return [b for b in range(self.partition.num_blocks) if b not in self.meta_blocks]


def prepare_city(
    cfg: CityDataConfig,
    log: ProgressLog,
    scene_box: Box | None = None,
    partition: BlockPartition | None = None,
    unbounded: bool = False,
) -> CityData:
    """Generate (if needed) and ingest (idempotently) the city; choose the blocks.

    ``scene_box`` (the field's explicit box, or None) replaces the scene's for ingest too, so rays
    are clipped to the very box the field normalises with. ``partition``: cut the rays into these
    blocks (an extended city model's) instead of a grid over the scene's cameras. ``unbounded``:
    rays keep the scene's whole [near, far] (a contracted field), stored apart
    (``rays-unbounded``)."""

    work = Path(cfg.work_dir)
    scene_root = cfg.scene
    if not scene_root:
        scene_root = str(work / "demo_city")
        views = cfg.views_per_block
        city = CityConfig(
            blocks_x=cfg.blocks_x,
            blocks_y=cfg.blocks_y,
            width=cfg.image_size,
            height=cfg.image_size,
            aerial_views_per_block=views,
            street_views_per_block=views,
            seed=cfg.seed,
        )
        log.info(f"generating the demo city ({cfg.blocks_x}x{cfg.blocks_y} blocks) in {scene_root}")
        make_city(scene_root, city)
    else:
        check_scene(scene_root, **scene_options(cfg, scene_box))
    root = (cfg.data_uri or str(work / ("rays-unbounded" if unbounded else "rays"))).rstrip("/")
    if unbounded and cfg.data_uri:
        root = f"{root}-unbounded"  # never mixed with the same scene's box-clipped rays
    if "://" not in root:  # workers run in other folders (Ray Train, ray job submit)
        root = str(Path(root).resolve())
    scene_root = str(Path(scene_root).resolve())
    # downscale and hold-out apply to a given scene; the demo city is made at its size, with splits
    options = scene_options(cfg, scene_box) if cfg.scene else {"scene_box": scene_box}
    uris = {}
    splits = (
        ("train", "test", "val") if has_own_validation(scene_root, options) else ("train", "test")
    )
    for split in splits:
        uris[split] = f"{root}/{split}"
        ingest = IngestOptions(
            blocks_x=cfg.blocks_x,
            blocks_y=cfg.blocks_y,
            split=split,
            progress=False,
            clip_to_box=not unbounded,
            **options,
        )
        manifest = ingest_scene(scene_root, uris[split], ingest, partition)
        log.info(
            f"{split} rays in {uris[split]}: {sum(manifest.block_rows.values())} "
            f"({manifest.partition.num_blocks} blocks)"
        )
    manifest = load_manifest(uris["train"])
    blocks = [b for b, rows in sorted(manifest.block_rows.items()) if rows > 0]
    order = list(cfg.block_order) or blocks
    meta = list(cfg.meta_blocks) or order[: max(1, (2 * len(order)) // 3)]
    for block in [*order, *meta]:
        manifest.partition.check_block(block)
        if block not in blocks:
            raise MclnfError(f"block {block} has no training rays (blocks with rays: {blocks})")
    partition = manifest.partition
    return CityData(
        scene_root, uris["train"], uris["test"], partition, meta, order, options, uris.get("val")
    )


def has_own_validation(scene_root: str, options: dict) -> bool:
    """Whether the scene has validation views apart from its training and test views (a scene
    that only holds out every n-th view has ``val`` = ``test``: not its own)."""
    try:
        val = load_scene(scene_root, "val", **options).frames
    except MclnfError:  # no split information and no hold-out: no val split at all
        return False
    others = load_scene(scene_root, "train", **options).frames
    others += load_scene(scene_root, "test", **options).frames
    taken = {frame.file_path for frame in others}
    return bool(val) and not any(frame.file_path in taken for frame in val)


RAY_COLUMNS = ["origin", "direction", "near", "far", "rgb"]


def block_draws(
    uri: str,
    blocks: list[int],
    rays_per_block: int,
    seed: int,
    skip: int = 0,
    exclude: np.ndarray | None = None,
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Per block of ``blocks`` in order: (its rays, the indices of ``rays_per_block`` of them,
    drawn from one generator seeded with ``seed``). ``skip``: leave out the first ``skip`` of
    each block's seeded permutation; ``exclude``: pixel keys (:func:`pixel_keys`) never drawn."""
    generator = torch.Generator().manual_seed(seed)
    for block in blocks:
        rays = read_block_rays(uri, block, [*RAY_COLUMNS, "image_id", "pixel"])
        total = rays["rgb"].shape[0]
        if total == 0:
            raise MclnfError(f"block {block} of {uri} has no rays (expected some to fit/score)")
        order = torch.randperm(total, generator=generator)
        if exclude is not None:
            order = order[~torch.from_numpy(np.isin(pixel_keys(rays)[order.numpy()], exclude))]
        if skip and len(order) < skip + rays_per_block:
            raise MclnfError(
                f"block {block} of {uri} has {len(order)} rays to draw from (expected at least "
                f"{skip} + {rays_per_block} to draw disjoint fitting and validation rays)"
            )
        pick = order[skip : skip + rays_per_block]
        if total < rays_per_block:  # small blocks: sample with replacement
            pick = torch.randint(0, total, (rays_per_block,), generator=generator)
        yield rays, pick


def pixel_keys(rays: dict[str, torch.Tensor]) -> np.ndarray:
    """One int64 per ray naming its pixel of its image (the same pixel in every block)."""
    return rays["image_id"].numpy().astype(np.int64) << 32 | rays["pixel"].numpy().astype(np.int64)


def drawn_pixels(uri: str, blocks: list[int], rays_per_block: int, seed: int) -> np.ndarray:
    """The pixel keys of what :func:`blocks_as_segments` draws with the same arguments."""
    draws = block_draws(uri, blocks, rays_per_block, seed)
    return np.concatenate([pixel_keys(rays)[pick.numpy()] for rays, pick in draws])


def blocks_as_segments(
    uri: str,
    blocks: list[int],
    rays_per_block: int,
    seed: int,
    name: str,
    skip: int = 0,
    exclude: np.ndarray | None = None,
) -> SignalSet:
    """``rays_per_block`` random rays of each block (in ``blocks`` order) as one SignalSet.

    coords (T*n, 8) packed rays, values (1, T*n, 3) colours, segment t = block ``blocks[t]``.
    ``skip``: leave out the first ``skip`` rays of each block's seeded draw, so a second call
    with the same seed and ``skip`` = the first call's ``rays_per_block`` gets other rays of
    each block; ``exclude`` (:func:`drawn_pixels` of the first call): and no pixel the first
    call drew in any block (a ray is stored in every block it crosses).
    """
    coords, values = [], []
    for rays, pick in block_draws(uri, blocks, rays_per_block, seed, skip, exclude):
        coords.append(
            pack_rays(
                rays["origin"][pick], rays["direction"][pick], rays["near"][pick], rays["far"][pick]
            )
        )
        values.append(rays["rgb"][pick])
    n = rays_per_block
    return SignalSet(
        modality="city",
        names=[name],
        coords=torch.cat(coords),
        values=torch.cat(values)[None],
        grid_shape=(len(blocks) * n,),
        segment_index=torch.arange(len(blocks) * n).reshape(-1, n),
    )


def field_for_capture(field_cfg: RadianceFieldConfig, scene: Scene | None) -> RadianceFieldConfig:
    """``field_cfg`` as it applies to a given ``scene`` (None: the generated demo city), settled
    before its rays are stored: with ``box_for_cut_outs``, a scene of objects cut out on a
    background (its images have transparent pixels) keeps the box and stratified samples, as
    many a ray as the proposal drew (no contraction, no proposal); any other scene (a real
    capture, the demo city) takes ``field_cfg`` as it is."""
    if not field_cfg.box_for_cut_outs or scene is None:
        return field_cfg
    if not (field_cfg.contraction or field_cfg.uses_proposal) or not is_cut_out(scene):
        return field_cfg
    # the field evaluates the proposal's stratified samples itself: as many a ray as before
    samples = field_cfg.grid.proposal.samples if field_cfg.uses_proposal else field_cfg.num_samples
    grid = dataclasses.replace(
        field_cfg.grid, proposal=dataclasses.replace(field_cfg.grid.proposal, samples=0)
    )
    return dataclasses.replace(field_cfg, contraction=False, grid=grid, num_samples=samples)


def city_field(field_cfg: RadianceFieldConfig, scene: Scene) -> RadianceFieldConfig:
    """The job's radiance field (and its sweep trials'): every setting of ``--field``, with the
    scene's box (unless ``--field.scene-box`` is given) and background."""
    taken = {
        f.name: getattr(field_cfg, f.name)
        for f in dataclasses.fields(field_cfg)
        if f.name not in ("scene_box", "background")
    }
    return field_for_scene(scene, scene_box=field_cfg.scene_box, **taken)
