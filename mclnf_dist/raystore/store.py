"""The ray store: block-partitioned Parquet shards of a scene's rays, and its manifest.

Layout under ``ROOT`` (a local path or ``s3://bucket/prefix``)::

    ROOT/manifest.json                    written LAST: its presence means "complete"
    ROOT/partition.json                   the BlockPartition (also inside the manifest)
    ROOT/block=0007/part-00003.parquet    rays of frame chunk 3 that belong to block 7
    ROOT/_ingest.json                     (ingest) what is being ingested: fingerprint + options
    ROOT/_chunks/chunk-00003.json         (ingest) done-marker of chunk 3: its shard records

One row per (ray, block it belongs to); columns in :data:`RAY_SCHEMA`. Fixed-size-list columns
(``origin``/``direction``/``rgb``) keep a ray's 3 values contiguous, which streams ~10x faster into
torch than separate float columns. ``image_id`` + ``pixel`` (= y * W + x) name the source pixel, so
every pixel round-trips. Each shard's rows are stored in a random order seeded by (block, chunk)
(``IngestOptions.shuffle_rows``), so streaming readers shuffle with contiguous reads only (see
:mod:`mclnf_dist.raystore.stream`) and a re-run writes the same bytes. Shard names are
deterministic (block, chunk) and every file is written atomically, which is what makes
:mod:`mclnf_dist.raystore.ingest` idempotent and resumable.

Integrity: the manifest records each shard's byte size and sha256. A reader checks a shard
against them the first time its process reads it (:func:`verify_shard_once`: one extra pass over
the bytes per shard per process, then cached), and ``mclnf dataset verify URI`` checks them all
(:func:`verify_store`); a mismatch is one line naming the shard and the manifest.
"""

import hashlib
import io
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mclnf_dist.config import (
    AnyFloat,
    NonNegativeFloat,
    PositiveInt,
    check_config,
)
from mclnf_dist.config_rules import box_problem, cross_field_rule
from mclnf_dist.errors import MclnfError
from mclnf_dist.scenes.partition import PARTITION_FILE, BlockPartition
from mclnf_dist.scenes.scene import SceneReading
from mclnf_dist.storage import (
    filesystem_for,
    join,
    read_json,
    write_atomic,
)

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"

RAY_SCHEMA = pa.schema(
    [
        ("origin", pa.list_(pa.float32(), 3)),
        ("direction", pa.list_(pa.float32(), 3)),
        ("rgb", pa.list_(pa.uint8(), 3)),
        ("image_id", pa.int32()),
        ("pixel", pa.int32()),
        ("time", pa.float32()),
        ("near", pa.float32()),
        ("far", pa.float32()),
    ]
)
"""One ray per row: world-space origin/direction, 8-bit colour, source pixel, time, bounds."""


def type_name(data_type: pa.DataType) -> str:
    """A type's name without list child names (Parquet calls them ``element``, Arrow ``item``)."""
    if pa.types.is_fixed_size_list(data_type):
        return f"fixed_size_list<{type_name(data_type.value_type)}>[{data_type.list_size}]"
    return str(data_type)


def schema_columns(schema: pa.Schema) -> dict[str, str]:
    """``{column: type name}``: the form of a schema stored in (and compared with) manifests."""
    return {f.name: type_name(f.type) for f in schema}


Point = tuple[AnyFloat, AnyFloat, AnyFloat]


@dataclass
class IngestOptions(SceneReading):
    """How a scene is read (:class:`SceneReading`) and cut into blocks and shards."""

    blocks_x: PositiveInt = 2
    """Grid cells along the first ground axis."""
    blocks_y: PositiveInt = 2
    """Grid cells along the second ground axis."""
    overlap: NonNegativeFloat = 0.15
    """Overlap margin as a fraction of the smaller cell side (seams need shared rays)."""
    time_slices: PositiveInt = 1
    """Equal time slices per spatial block (for scenes with time phases)."""
    up_axis: str = "z"
    """Vertical world axis (the city generator and nerfstudio use z)."""
    clip_to_box: bool = True
    """Per-ray near/far = the ray's crossing of the scene box (if the scene has one), so samples
    and block membership stay where the geometry is; a ray missing the box has near == far."""
    samples_per_ray: PositiveInt = 16
    """Points along [near, far] tested for block membership."""
    shuffle_rows: bool = True
    """Store each shard's rows in a random order, seeded by (block, chunk) so a re-run writes the
    same bytes: streaming readers then shuffle with cheap contiguous reads. Unshuffled stores are
    read correctly too, but their batches are less random."""
    rows_per_group: PositiveInt = 16384
    """Parquet row-group size: the unit a streaming reader reads and shuffles. A reader's window
    (``shuffle_buffer`` rays, 262144 in block training) holds 16 random row groups at this size,
    so a batch draws from most of a scene's frames; at 65536 it held 4, i.e. at most 4 shards of
    8 frames, and training saw a few views at a time (the fox at 1/4, random grid init: held-out
    PSNR after 256 steps 18.55 dB instead of 14.67, after 1000 19.84 instead of 19.56)."""
    frames_per_chunk: PositiveInt = 8
    """Frames per Ray task (bounds a task's memory; more chunks = more parallelism)."""
    split: str = "train"
    """Which split of the scene to ingest."""
    scene_box: tuple[Point, Point] | None = None
    """Box overriding the scene's (``--field.scene-box``); None: the file's, or derived."""
    compression: str = "lz4"
    """Parquet codec (lz4 read fastest here, ~10% faster than snappy, as compact)."""
    progress: bool = True
    """Show a progress bar (rays/s, ETA) on stderr."""

    def __post_init__(self) -> None:
        check_config(self)  # built from flags by ``mclnf dataset ingest``, or in code

    def fingerprint(self) -> dict:
        """The options that determine the output (runtime-only fields left out; options added
        with a default count only away from it, so adding an option leaves fingerprints as
        they were)."""
        later = {
            "downscale": 1,
            "holdout_every": 8,
            "scene_box": None,
            "skip_missing_images": False,
        }
        return {
            k: v
            for k, v in asdict(self).items()
            if k != "progress" and not (k in later and later[k] == v)
        }


@cross_field_rule(IngestOptions)
def ingest_box_not_empty(options: IngestOptions, prefix: str) -> str | None:
    return box_problem(f"{prefix}scene_box", options.scene_box)


@dataclass
class Manifest:
    """What a complete ray store holds; ``ROOT/manifest.json``."""

    partition: BlockPartition
    block_rows: dict[int, int]
    """Rows (rays) per block id; blocks with no rays are listed with 0."""
    shards: list[dict]
    """One record per file: block, file (relative to ROOT), rows, row_groups, bytes, sha256."""
    source: dict
    """scene path, split, transforms file, its sha256, frame count, pixel count."""
    options: dict
    columns: dict[str, str] = field(default_factory=lambda: schema_columns(RAY_SCHEMA))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        data["partition"] = self.partition.to_dict()
        data["block_rows"] = {str(k): v for k, v in sorted(self.block_rows.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "manifest") -> "Manifest":
        try:
            data = dict(data)
            data["partition"] = BlockPartition.from_dict(data["partition"])
            data["block_rows"] = {int(k): int(v) for k, v in data["block_rows"].items()}
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except (KeyError, TypeError, ValueError) as err:
            raise MclnfError(f"{where} is not a ray-store manifest ({err!r})") from err

    def block_shards(self, block: int) -> list[dict]:
        """Shard records of ``block`` (raises for a block that does not exist)."""
        self.partition.check_block(block)
        return [s for s in self.shards if s["block"] == block]


def load_manifest(uri: str) -> Manifest:
    """Read ``uri/manifest.json``; :class:`MclnfError` if missing, malformed or a newer schema."""
    fs, root = filesystem_for(uri)
    path = join(root, MANIFEST_FILE)
    if not fs.exists(path):
        raise MclnfError(f"no ray store at {uri}: {path} is missing (run `mclnf dataset ingest`)")
    manifest = Manifest.from_dict(read_json(fs, path), where=path)
    if manifest.schema_version != SCHEMA_VERSION:
        raise MclnfError(
            f"{path} has schema_version {manifest.schema_version}, this code reads {SCHEMA_VERSION}"
        )
    return manifest


HASH_CHUNK = 8 << 20
"""Bytes read at a time while hashing a shard (memory stays flat whatever the shard's size)."""


def shard_problem(fs, root: str, record: dict) -> str | None:
    """Why the shard of manifest ``record`` under ``root`` differs from it (missing, size, sha256),
    or None if it matches. Records without ``sha256`` (none are written so) check the size only."""
    path = join(root, record["file"])
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return f"shard {path} is missing"
    if size != record["bytes"]:
        return f"shard {path} has {size} bytes, the manifest records {record['bytes']}"
    if "sha256" not in record:
        return None
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != record["sha256"]:
        found, expected = digest.hexdigest(), record["sha256"]
        return f"shard {path} has sha256 {found}, the manifest records {expected}"
    return None


_verified: set[tuple[str, int, str]] = set()
"""(shard path, bytes, sha256) already checked by this process."""
_verified_lock = threading.Lock()


def verify_shard_once(fs, root: str, record: dict) -> None:
    """Check the shard of ``record`` against the manifest the first time this process reads it
    (later calls cost a set lookup); :class:`MclnfError` naming the shard and the manifest."""
    key = (join(root, record["file"]), record["bytes"], record.get("sha256", ""))
    if key in _verified:
        return
    with _verified_lock:
        if key in _verified:
            return
        problem = shard_problem(fs, root, record)
        if problem is not None:
            raise MclnfError(
                f"{problem} in {join(root, MANIFEST_FILE)}: the ray store is damaged (run "
                "`mclnf dataset verify` on it to list every bad shard; re-ingest to a new URI)"
            )
        _verified.add(key)


def verify_store(uri: str) -> tuple[int, list[str]]:
    """Check every shard of the store at ``uri`` against its manifest: ``(shards, problems)``,
    one line per bad shard."""
    manifest = load_manifest(uri)
    fs, root = filesystem_for(uri)
    fs.invalidate_cache(root)
    problems = [shard_problem(fs, root, record) for record in manifest.shards]
    return len(manifest.shards), [p for p in problems if p is not None]


def shard_name(block: int, chunk: int) -> str:
    """``block=0007/part-00003.parquet``: deterministic, so a redone chunk overwrites its shards."""
    return f"block={block:04d}/part-{chunk:05d}.parquet"


DICTIONARY_COLUMNS = ["image_id", "time", "near", "far"]
"""Columns with few distinct values per shard. Dictionary-encoding the float ray columns would slow
writes ~4x and reads ~20% for little space (measured on rendered and random rays)."""


def encode_shard(table: pa.Table, rows_per_group: int, compression: str) -> bytes:
    """Parquet bytes of ``table`` with row groups of ``rows_per_group`` rows."""
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        row_group_size=rows_per_group,
        compression=compression,
        use_dictionary=DICTIONARY_COLUMNS,
    )
    return sink.getvalue()


def rays_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """A :data:`RAY_SCHEMA` table from numpy columns: (N, 3) arrays for the list columns."""
    arrays = []
    for schema_field in RAY_SCHEMA:
        values = np.ascontiguousarray(columns[schema_field.name])
        if pa.types.is_fixed_size_list(schema_field.type):
            flat = pa.array(values.reshape(-1), type=schema_field.type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, 3))
        else:
            arrays.append(pa.array(values, type=schema_field.type))
    return pa.Table.from_arrays(arrays, schema=RAY_SCHEMA)


ROW_SHUFFLE_KEY = 0x5EED
"""Seeds the ingest row permutation together with (block, chunk)."""


def shuffled_rows(columns: dict[str, np.ndarray], block: int, chunk: int) -> dict[str, np.ndarray]:
    """``columns`` with their rows in a random order that only depends on (block, chunk)."""
    rows = len(next(iter(columns.values()), ()))
    order = np.random.default_rng([ROW_SHUFFLE_KEY, block, chunk]).permutation(rows)
    return {name: np.asarray(values)[order] for name, values in columns.items()}


def write_shard(
    fs, root: str, block: int, chunk: int, columns: dict[str, np.ndarray], opts: IngestOptions
) -> dict:
    """Atomically write the rays ``columns`` of ``block`` from ``chunk`` (rows shuffled if
    ``opts.shuffle_rows``); returns its record."""
    if opts.shuffle_rows:
        columns = shuffled_rows(columns, block, chunk)
    table = rays_table(columns)
    data = encode_shard(table, opts.rows_per_group, opts.compression)
    name = shard_name(block, chunk)
    write_atomic(join(root, name), data, fs=fs)
    return {
        "block": block,
        "chunk": chunk,
        "file": name,
        "rows": table.num_rows,
        "row_groups": -(-table.num_rows // opts.rows_per_group),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_store(
    uri: str,
    partition: BlockPartition,
    shards: Iterable[tuple[int, dict[str, np.ndarray]]],
    options: IngestOptions | None = None,
    source: dict | None = None,
) -> Manifest:
    """Write a ray store from ready-made rays: ``(block, columns)`` pairs, one shard each.

    For synthetic stores (benchmarks, tests) and other producers of rays; ``shards`` may be a
    generator, so memory stays at one shard. Columns as in :func:`rays_table`.
    """
    opts = options or IngestOptions()
    fs, root = filesystem_for(uri)
    records, chunks = [], {}
    for block, columns in shards:
        partition.check_block(block)
        chunks[block] = chunks.get(block, -1) + 1
        records.append(write_shard(fs, root, block, chunks[block], columns, opts))
    block_rows = dict.fromkeys(range(partition.num_blocks), 0)
    for record in records:
        block_rows[record["block"]] += record["rows"]
    manifest = Manifest(partition, block_rows, records, source or {}, opts.fingerprint())
    write_atomic(join(root, PARTITION_FILE), partition.to_dict(), fs=fs)
    write_atomic(join(root, MANIFEST_FILE), manifest.to_dict(), fs=fs)
    return manifest
