"""Parallel, idempotent, resumable ingest of a posed-image scene into a ray store (Ray tasks).

Why it is safe to re-run: each frame chunk is one Ray task whose shard names are deterministic
(block, chunk); every shard and the chunk's done-marker ``ROOT/_chunks/chunk-NNNNN.json`` are
written atomically, the marker last; a chunk counts as done only when its marker exists and all its
shards exist with the recorded sizes. A re-run after a crash therefore redoes only unfinished chunks
(overwriting their partial shards, so no duplicates), and ``manifest.json`` is written last of all.
``ROOT/_ingest.json`` records the source fingerprint (sha256 of transforms.json) and the options;
output from another source or other options is never overwritten: the mismatch is an error naming
the file and the field. Unchanged complete output makes a re-run a no-op.
"""

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mclnf_dist.config import flatten
from mclnf_dist.errors import MclnfError
from mclnf_dist.faults import INGEST_CHUNK, armed
from mclnf_dist.nerf.rays import camera_rays, near_far_from_box
from mclnf_dist.raystore.store import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    IngestOptions,
    Manifest,
    write_shard,
)
from mclnf_dist.runtime import ensure_ray, worker_env
from mclnf_dist.scenes.partition import PARTITION_FILE, BlockPartition
from mclnf_dist.scenes.scene import (
    Frame,
    Scene,
    check_scene,
    load_frame_image,
    load_scene,
    scene_options,
)
from mclnf_dist.storage import (
    filesystem_for,
    join,
    read_json,
    remove_stale_temporaries,
    write_atomic,
)

log = logging.getLogger(__name__)

INTENT_FILE = "_ingest.json"
CHUNK_DIR = "_chunks"


def frame_rays(
    scene: Scene, frame: Frame, image_id: int, clip_to_box: bool
) -> dict[str, np.ndarray]:
    """All H*W rays of one frame as numpy columns, pixel order y * W + x.

    With ``clip_to_box`` and a scene box, each ray's [near, far] is where it crosses the box
    (within the scene's near/far); a ray that misses the box gets near == far == scene.near.
    """

    image = load_frame_image(scene, frame)  # (H, W, 3) uint8
    args = (frame.fx, frame.fy, frame.cx, frame.cy, frame.width, frame.height)
    origins, directions = camera_rays(frame.c2w, *args, distortion=frame.distortion)  # (H*W, 3)
    count = frame.width * frame.height
    near = torch.full((count,), scene.near)
    far = torch.full((count,), scene.far)
    if clip_to_box and scene.scene_box is not None:
        box = scene.scene_box
        near, far, hit = near_far_from_box(origins, directions, box[0], box[1], scene.near)
        far = far.clamp_max(scene.far)
        missed = ~hit | (far <= near)
        near[missed], far[missed] = scene.near, scene.near
    return {
        "origin": origins.numpy(),
        "direction": directions.numpy(),
        "rgb": image.reshape(count, 3),
        "image_id": np.full(count, image_id, dtype=np.int32),
        "pixel": np.arange(count, dtype=np.int32),
        "time": np.full(count, frame.time, dtype=np.float32),
        "near": near.numpy().astype(np.float32),
        "far": far.numpy().astype(np.float32),
    }


def write_chunk(
    scene: Scene,
    uri: str,
    chunk: int,
    frame_ids: list[int],
    partition: dict,
    options: dict,
    crash: bool = False,
) -> list[dict]:
    """Route the rays of frames ``frame_ids`` to blocks and write one shard per block (its rows
    in a random order seeded by (block, chunk) if ``shuffle_rows``: a redone chunk writes the same
    bytes).

    Runs inside a Ray task. Returns the shard records, also written as the chunk's done-marker
    (atomically, after every shard), which is what makes the chunk count as done. ``crash``
    (an injected fault, :mod:`mclnf_dist.faults`) raises after the first shard.
    """
    opts = IngestOptions(**options)
    blocks = BlockPartition.from_dict(partition)
    per_block: dict[int, list[dict[str, np.ndarray]]] = {}
    for image_id in frame_ids:
        rays = frame_rays(scene, scene.frames[image_id], image_id, opts.clip_to_box)
        member = blocks.ray_blocks(
            rays["origin"], rays["direction"], rays["near"], rays["far"], rays["time"],
            samples_per_ray=opts.samples_per_ray,
        )  # fmt: skip
        for block in np.flatnonzero(member.any(axis=0)):
            rows = member[:, block]
            per_block.setdefault(int(block), []).append({k: v[rows] for k, v in rays.items()})
    fs, root = filesystem_for(uri)
    records = []
    for block, parts in sorted(per_block.items()):
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        records.append(write_shard(fs, root, block, chunk, columns, opts))
        if crash:
            raise RuntimeError(f"injected failure in chunk {chunk} after writing one shard")
    write_atomic(join(root, CHUNK_DIR, f"chunk-{chunk:05d}.json"), records, fs=fs)
    return records


def check_compatible(path: str, recorded: dict, expected: dict) -> None:
    """Raise :class:`MclnfError` naming ``path`` and the first differing field, if any."""
    recorded, expected = flatten(recorded), flatten(expected)
    informative = {"source.scene"}  # where the scene was: may differ between machines
    for key in sorted((set(recorded) | set(expected)) - informative):
        if recorded.get(key) != expected.get(key):
            raise MclnfError(
                f"{path} was written with {key}={recorded.get(key)!r}, this ingest has "
                f"{key}={expected.get(key)!r}: write to a new URI or delete the old output "
                "(existing output is never overwritten)"
            )


def done_chunks(fs, root: str) -> dict[int, list[dict]]:
    """Chunks whose marker exists and whose shards all exist with the recorded byte sizes."""
    fs.invalidate_cache(root)  # other processes (the Ray tasks) wrote here: no stale listings
    listing = fs.find(root, detail=True) if fs.exists(root) else {}
    sizes = {path[len(root) + 1 :]: info.get("size") for path, info in listing.items()}
    done = {}
    for name in sizes:
        if name.startswith(CHUNK_DIR + "/chunk-") and name.endswith(".json"):
            records = read_json(fs, join(root, name))
            if all(sizes.get(r["file"]) == r["bytes"] for r in records):
                done[int(name.rsplit("-", 1)[1].split(".")[0])] = records
    return done


LAYOUT_OPTIONS = ("rows_per_group", "compression", "frames_per_chunk")
"""Options that say how rays are laid out in files, not which rays a store holds."""


def recorded_records(fs, root: str) -> dict[str, dict]:
    """The manifest and the ingest intent already at ``root`` (path -> record), those that exist."""
    paths = (join(root, MANIFEST_FILE), join(root, INTENT_FILE))
    return {path: read_json(fs, path) for path in paths if fs.exists(path)}


def existing_layout(records: dict[str, dict], root: str, opts: IngestOptions) -> IngestOptions:
    """``opts`` with the layout (:data:`LAYOUT_OPTIONS`) of the store already at ``root``, if
    any: a store written under an older default (row groups of 65536 rays before 16384) is
    reused or resumed as it was written, since the reader reads any layout; what it holds must
    still match (:func:`check_compatible`)."""
    recorded = next(iter(records.values()), {}).get("options") or {}  # the manifest's first
    layout = {k: recorded[k] for k in LAYOUT_OPTIONS if k in recorded}
    if any(getattr(opts, k) != v for k, v in layout.items()):
        log.info(f"{root}: kept as written ({layout})")
        opts = dataclasses.replace(opts, **layout)
    return opts


def ingest_scene(
    scene_root: str,
    uri: str,
    options: IngestOptions | None = None,
    partition: BlockPartition | None = None,
) -> Manifest:
    """Ingest the posed images of ``scene_root`` into a ray store at ``uri``; returns its manifest.

    One Ray task per chunk of ``frames_per_chunk`` frames (Ray started by
    :func:`~mclnf_dist.runtime.ensure_ray` if it is not running). Re-running is safe: complete
    identical output is a no-op, an interrupted run resumes.
    ``partition``: cut the rays into these blocks (an extended city model's) instead of a grid
    over the scene's cameras.
    """

    opts = options or IngestOptions()
    fs, root = filesystem_for(uri)
    fs.invalidate_cache(root)
    records = recorded_records(fs, root)
    opts = existing_layout(records, root, opts)
    scene = load_scene(scene_root, opts.split, **scene_options(opts, opts.scene_box))
    source = {
        "split": opts.split,
        "transforms": Path(scene.transforms_file).name,
        "transforms_sha256": transforms_sha256(scene.transforms_files),
        "frames": len(scene.frames),
        "pixels": int(sum(f.width * f.height for f in scene.frames)),
    }
    # Not the scene's path: it may differ between machines; its transforms fingerprint may not.
    intent = {"schema_version": SCHEMA_VERSION, "source": source, "options": opts.fingerprint()}
    if partition is not None:
        intent["partition"] = partition.to_dict()
    manifest_path, intent_path = join(root, MANIFEST_FILE), join(root, INTENT_FILE)
    for path, recorded in records.items():
        check_compatible(path, {k: recorded.get(k) for k in intent}, intent)
    if intent_path not in records:
        write_atomic(intent_path, intent, fs=fs)
    remove_stale_temporaries(fs, root)

    # The partition comes from the cameras of ALL splits, so the train and the test split of a
    # scene, ingested separately, are cut into the very same blocks.
    if partition is None:
        every = load_scene(scene_root, "all", **scene_options(opts, opts.scene_box))
        partition = BlockPartition.from_cameras(
            every.camera_centers(),
            opts.blocks_x,
            opts.blocks_y,
            opts.overlap,
            opts.up_axis,
            np.array([f.time for f in every.frames]),
            opts.time_slices,
        )
    if not fs.exists(join(root, PARTITION_FILE)):
        write_atomic(join(root, PARTITION_FILE), partition.to_dict(), fs=fs)

    step = max(1, opts.frames_per_chunk)
    chunks = {c: list(range(s, min(s + step, len(scene.frames)))) for c, s in
              enumerate(range(0, len(scene.frames), step))}  # fmt: skip
    done = done_chunks(fs, root)
    done = {c: r for c, r in done.items() if c in chunks}
    todo = [c for c in chunks if c not in done]
    if not todo and manifest_path in records:
        log.info("ray store %s is complete and matches; nothing to do", uri)
        return Manifest.from_dict(records[manifest_path], where=manifest_path)
    failures = run_chunks(scene, uri, chunks, todo, partition, opts, done)
    if failures:
        chunk, err = failures[0]
        cause = getattr(err, "cause", None) or err  # a RayTaskError wraps the task's error
        raise MclnfError(
            f"ingest into {uri} failed in {len(failures)} chunk(s), first chunk {chunk} "
            f"(frames {chunks[chunk][0]}..{chunks[chunk][-1]}): {cause}; "
            "re-run the same command to resume"
        )
    shards = sorted(
        (r for c in sorted(done) for r in done[c]), key=lambda r: (r["block"], r["file"])
    )
    block_rows = dict.fromkeys(range(partition.num_blocks), 0)
    for record in shards:
        block_rows[record["block"]] += record["rows"]
    source = {"scene": str(Path(scene.root).resolve()), **source}
    manifest = Manifest(partition, block_rows, shards, source, opts.fingerprint())
    write_atomic(manifest_path, manifest.to_dict(), fs=fs)  # LAST: marks the store complete
    return manifest


def check_ingest_scene(scene_root: str, opts: IngestOptions) -> None:
    """Read the whole scene (split ``all``) and the split to ingest, as the ingest will: a bad
    file or frame is one :class:`MclnfError` line before any work (and before Ray starts)."""
    check_scene(scene_root, (opts.split,), **scene_options(opts, opts.scene_box))


def transforms_sha256(files: list[str]) -> str:
    """sha256 of the one transforms file, or of the files' sha256s (Blender's split ``all``; a
    COLMAP model folder: its files in name order)."""
    digests = [file_sha256(f) for f in files]
    return (
        digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    )


def file_sha256(path: str) -> str:
    """sha256 of a file, or of a folder's files' sha256s in name order (a COLMAP model)."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
        inner = "".join(file_sha256(os.path.join(path, n)) for n in names)
        return hashlib.sha256(inner.encode()).hexdigest()
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_chunks(
    scene: Scene,
    uri: str,
    chunks: dict[int, list[int]],
    todo: list[int],
    partition: BlockPartition,
    opts: IngestOptions,
    done: dict[int, list[dict]],
) -> list[tuple[int, Exception]]:
    """Run the ``todo`` chunks as Ray tasks; fill ``done``; return the failed chunks' errors."""
    import ray

    if not todo:
        return []
    ensure_ray()
    # System failures (a killed worker) are retried: a chunk rewrites the same files. Exceptions
    # (a bad image) are not: they are reported after the other chunks finish.
    task = ray.remote(num_cpus=1, max_retries=2)(write_chunk)
    env = worker_env()  # endpoint and region only: credentials come from the nodes' chain
    if env:  # workers may predate these settings (a test's S3 server, a MinIO endpoint)
        task = task.options(runtime_env={"env_vars": env})
    scene_ref, part = ray.put(scene), partition.to_dict()
    crash = armed(INGEST_CHUNK)
    pending = {
        task.remote(scene_ref, uri, c, chunks[c], part, asdict(opts), c == crash): c for c in todo
    }
    total = sum(scene.frames[i].width * scene.frames[i].height for c in todo for i in chunks[c])
    bar = progress_bar(total, opts.progress)
    failures, started = [], time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=30.0)
        for ref in ready:
            chunk = pending.pop(ref)
            try:
                done[chunk] = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - every failure is reported after the rest
                failures.append((chunk, err))
            pixels = sum(scene.frames[i].width * scene.frames[i].height for i in chunks[chunk])
            bar.update(pixels)
    bar.close()
    seconds = time.perf_counter() - started
    log.info("ingested %d rays in %.1f s (%.0f rays/s)", total, seconds, total / max(seconds, 1e-9))
    return sorted(failures, key=lambda f: f[0])


def progress_bar(total: int, enabled: bool):
    """A tqdm bar in rays with rate and ETA (disabled bars still accept ``update``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="ray", unit_scale=True, desc="ingest", disable=not enabled)
