"""Streaming one block's rays out of a ray store as shuffled torch batches, in flat memory.

Randomness, and why it is cheap: rows are shuffled ONCE, at ingest. Each shard's rows are stored in
a seeded random order (``IngestOptions.shuffle_rows``, see :func:`ray_store.write_shard`), so any
run of consecutive rows of a shard is already a uniform random sample of that shard's rays (all
pixels of its frame chunk that fall in the block). The reader then only does contiguous work, and
randomises every epoch (seeded by ``(seed, epoch)``) at three levels:

1. row groups: every row group of the block's shards is visited once per epoch, in a random order
   across files (found from the manifest by the hive key ``block=NNNN`` with a ``pyarrow.dataset``
   partition filter, no listing);
2. windows: consecutive row groups of that order, ~``shuffle_buffer`` rays, are decoded together;
3. pieces: each row group of a window is cut into pieces of ``shuffle_block`` rows (default
   ``batch_size // 8``) after a random first piece (so the cuts move every epoch), and the pieces
   of the whole window are permuted; batches are consecutive runs of that sequence. A full batch
   thus holds >= 8 pieces from random row groups (shards) of the window.

What is not random: the rows inside a piece keep their stored (already random) order. Every ray
comes exactly once per epoch; ``shuffle=False`` gives the stored order. A store whose rows were
not shuffled at ingest (``shuffle_rows`` off, or absent from its manifest) is read just as
correctly, but its pieces are runs of consecutive pixels of one frame, so batches are far less
random (a warning says so).

No per-row gather: each batch column is one ``np.concatenate`` of its pieces' slices of the
decoded (zero-copy) Arrow buffers, cast to the training dtype in the same copy. Two background
threads decode windows and cut them into batches (pyarrow and numpy copies release the GIL), up to
``prefetch`` windows ahead of the consumer. Memory is O((prefetch + 2) * shuffle_buffer) rays,
whatever the scene's size.

Batches are dicts of CPU (or ``device``) tensors::

    origin (B, 3) float32, direction (B, 3) float32, rgb (B, 3) float32 in [0, 1],
    image_id (B,) int64, pixel (B,) int64 (y * W + x), time / near / far (B,) float32
"""

import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import torch
from torch import Tensor

from mclnf_dist.errors import MclnfError
from mclnf_dist.raystore.store import (
    RAY_SCHEMA,
    Manifest,
    load_manifest,
    schema_columns,
    verify_shard_once,
)
from mclnf_dist.storage import arrow_filesystem, filesystem_for, join

log = logging.getLogger(__name__)
BLOCK_KEY = pa.schema([("block", pa.int32())])
Batch = dict[str, Tensor]


class BlockReader:
    """The row groups of one block of a ray store, readable one at a time (validated)."""

    def __init__(self, uri: str, block: int, columns: Sequence[str] | None = None) -> None:
        self.uri = uri
        self.manifest: Manifest = load_manifest(uri)
        records = self.manifest.block_shards(block)  # raises for an unknown block
        self.columns = list(columns) if columns is not None else RAY_SCHEMA.names
        unknown = [c for c in self.columns if c not in RAY_SCHEMA.names]
        if unknown or not self.columns:
            raise MclnfError(f"unknown ray columns {unknown}; available: {RAY_SCHEMA.names}")
        fs, root = filesystem_for(uri)
        self.fs, self.root = fs, root
        dataset = ds.dataset(
            [join(root, s["file"]) for s in self.manifest.shards],
            schema=pa.unify_schemas([RAY_SCHEMA, BLOCK_KEY]),
            format="parquet",
            filesystem=arrow_filesystem(fs),
            partitioning=ds.partitioning(BLOCK_KEY, flavor="hive"),
            partition_base_dir=root,
        )
        by_path = {join(root, s["file"]): s for s in records}
        self.files = list(dataset.get_fragments(filter=ds.field("block") == block))
        self.records = [by_path[f.path] for f in self.files]
        self.units = [(i, g) for i, r in enumerate(self.records) for g in range(r["row_groups"])]
        self.num_rows = sum(r["rows"] for r in self.records)
        self.rows_per_group = int(self.manifest.options.get("rows_per_group", 0)) or max(
            [-(-r["rows"] // r["row_groups"]) for r in self.records if r["row_groups"]] or [1]
        )
        self.pre_shuffled = bool(self.manifest.options.get("shuffle_rows", False))
        """Rows stored in random order (``shuffle_rows`` in the manifest; absent means no)."""
        self._opened: dict[int, list] = {}
        self._lock = threading.Lock()  # windows are built on several threads

    def _row_groups(self, index: int) -> list:
        """Row-group fragments of file ``index``, checked against the manifest on first use."""
        with self._lock:
            if index not in self._opened:
                self._opened[index] = self._open(index)
            return self._opened[index]

    def _open(self, index: int) -> list:
        fragment, record = self.files[index], self.records[index]
        verify_shard_once(self.fs, self.root, record)  # size + sha256, once per process
        try:
            fragment.ensure_complete_metadata()
            physical = fragment.physical_schema
            rows = sum(g.num_rows for g in fragment.row_groups)
        except (pa.ArrowException, OSError) as err:
            raise self._corrupt(index, err) from err
        expected, found = schema_columns(RAY_SCHEMA), schema_columns(physical)
        if found != expected or expected != self.manifest.columns:
            raise MclnfError(
                f"shard {fragment.path} has columns {found}, the manifest of {self.uri} "
                f"and this reader expect {self.manifest.columns}"
            )
        sizes = [g.num_rows for g in fragment.row_groups]
        if sizes != [self.unit_rows((index, g)) for g in range(record["row_groups"])]:
            raise MclnfError(
                f"shard {fragment.path} has {rows} rows in {len(sizes)} row groups, the "
                f"manifest expects {record['rows']} in {record['row_groups']} groups of "
                f"{self.rows_per_group}"
            )
        return fragment.split_by_row_group()

    def _corrupt(self, index: int, err: Exception) -> MclnfError:
        record = self.records[index]
        return MclnfError(
            f"shard {self.files[index].path} is corrupt or unreadable ({err}); expected a Parquet "
            f"file of {record['rows']} rays, {record['bytes']} bytes, sha256 {record.get('sha256')}"
        )

    def read(self, unit: tuple[int, int]) -> dict[str, np.ndarray]:
        """The (file, row group) ``unit`` as numpy columns (see :func:`table_to_numpy`).

        Decoding runs on the calling thread (``use_threads=False``): windows are built on two
        threads at once, which scales better than pyarrow's per-column threads.
        """
        index, group = unit
        try:
            table = self._row_groups(index)[group].to_table(columns=self.columns, use_threads=False)
        except (pa.ArrowException, OSError) as err:
            raise self._corrupt(index, err) from err
        return table_to_numpy(table)

    def unit_rows(self, unit: tuple[int, int]) -> int:
        """Rows of row group ``unit`` (all ``rows_per_group`` but a file's last), known upfront."""
        index, group = unit
        return min(self.rows_per_group, self.records[index]["rows"] - group * self.rows_per_group)

    def window_units(
        self, shuffle_buffer: int, seed: int | None, epoch: int
    ) -> list[tuple[list, int]]:
        """One epoch's row groups in a random order (stored order for seed None), grouped into
        windows of ~shuffle_buffer rays: ``(units, rows)`` per window."""
        order = np.arange(len(self.units))
        if seed is not None:
            order = np.random.default_rng([seed, epoch]).permutation(len(self.units))
        windows, current, rows = [], [], 0
        for position in order:
            current.append(self.units[position])
            rows += self.unit_rows(self.units[position])
            if rows >= shuffle_buffer:
                windows.append((current, rows))
                current, rows = [], 0
        return windows + ([(current, rows)] if current else [])


def table_to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """Ray-table columns as zero-copy (read-only) numpy arrays; fixed-size lists as (N, 3).

    Zero-copy: a list column's flattened child values viewed as (N, 3), no ``combine_chunks``
    (which copies) unless the table came in several chunks.
    """
    out = {}
    for name in table.column_names:
        column = table.column(name)
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if pa.types.is_fixed_size_list(array.type):
            size = array.type.list_size
            out[name] = array.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
        else:
            out[name] = array.to_numpy(zero_copy_only=False)
    return out


TRAINING_DTYPES = {"rgb": np.float32, "image_id": np.int64, "pixel": np.int64}
"""Batch dtypes that differ from the stored ones (the rest keep theirs: float32)."""

Segments = list[tuple[int, int, int]]
"""``(part, start, stop)``: rows ``start:stop`` of decoded part (row group) ``part``."""


def assemble(parts: list[dict[str, np.ndarray]], segments: Segments) -> Batch:
    """One batch: the ``segments`` of ``parts`` concatenated, column by column, in training dtypes.

    Each column is ONE ``np.concatenate`` of contiguous slices straight into a fresh array of the
    training dtype (the cast happens in the copy; rgb is then scaled to [0, 1] in place), shared
    with torch by ``torch.from_numpy``: no per-row gather, no second copy.
    """
    rows = sum(stop - start for _, start, stop in segments)
    out = {}
    for name, like in parts[0].items():
        array = np.empty((rows, *like.shape[1:]), dtype=TRAINING_DTYPES.get(name, like.dtype))
        slices = [parts[p][name][start:stop] for p, start, stop in segments]
        np.concatenate(slices, out=array, casting="same_kind")
        tensor = torch.from_numpy(array)
        if name == "rgb":
            tensor.div_(255.0)
        out[name] = tensor
    return out


def window_pieces(sizes: list[int], piece: int, rng: np.random.Generator | None) -> np.ndarray:
    """``(part, start, stop)`` rows of a window's pieces, in the order batches take them.

    Each part (row group) is cut into pieces of ``piece`` rows after a random first piece of 1 to
    ``piece`` rows (so pieces start at other rows every epoch), and the pieces of all parts are
    permuted together. Without ``rng``: each part whole, in order (stored order).
    """
    cuts = []
    for index, size in enumerate(sizes):
        first = size if rng is None else int(rng.integers(1, piece + 1))
        starts = np.concatenate([[0], np.arange(min(first, size), size, piece)])
        stops = np.append(starts[1:], size)
        cuts.append(np.stack([np.full(len(starts), index), starts, stops], axis=1))
    pieces = np.concatenate(cuts) if cuts else np.zeros((0, 3), dtype=np.int64)
    return pieces if rng is None else pieces[rng.permutation(len(pieces))]


def piece_segments(pieces: np.ndarray, ends: np.ndarray, begin: int, end: int) -> Segments:
    """The segments of rows ``begin:end`` of the sequence that the ordered ``pieces`` make up
    (``ends``: cumulative piece lengths)."""
    first = int(np.searchsorted(ends, begin, side="right"))
    last = int(np.searchsorted(ends, end, side="left"))
    chosen = pieces[first : last + 1].copy()
    offsets = ends[first : last + 1] - (chosen[:, 2] - chosen[:, 1])  # sequence row of each start
    chosen[0, 1] += begin - offsets[0]
    chosen[-1, 2] -= ends[last] - end
    return [tuple(row) for row in chosen.tolist()]


def shuffled_window(
    reader: BlockReader,
    units: list,
    batch_size: int,
    head: int,
    seed: list | None,
    piece: int,
) -> tuple[Batch | None, list[Batch], Batch | None]:
    """Read ``units``, order their pieces (see :func:`window_pieces`; stored order if seed is None)
    and cut the sequence into ``(head, full batches, tail)``: ``head`` rays complete the previous
    window's tail."""
    parts = [reader.read(unit) for unit in units]
    sizes = [len(p[reader.columns[0]]) for p in parts]
    rng = None if seed is None else np.random.default_rng(seed)
    pieces = window_pieces(sizes, piece, rng)
    ends = np.cumsum(pieces[:, 2] - pieces[:, 1])
    rows = int(ends[-1]) if len(ends) else 0
    head = min(head, rows)
    full_end = head + (rows - head) // batch_size * batch_size

    def batch(begin: int, end: int) -> Batch:
        return assemble(parts, piece_segments(pieces, ends, begin, end))

    fulls = [batch(start, start + batch_size) for start in range(head, full_end, batch_size)]
    first = batch(0, head) if head else None
    last = batch(full_end, rows) if full_end < rows else None
    return first, fulls, last


def shuffled_batches(
    reader: BlockReader,
    batch_size: int,
    shuffle_buffer: int,
    seed: int | None,
    epochs: int | None,
    drop_last: bool,
    prefetch: int,
    piece: int,
) -> Iterator[Batch]:
    """The batches of ``epochs`` epochs (None: forever), each ray once per epoch, shuffled.

    Window sizes are known from the manifest, so each window job knows how many of its rays
    complete the previous window's short tail: every batch but an epoch's last has exactly
    ``batch_size`` rays, and with ``seed=None`` the rays come in stored order.
    """
    if not reader.units:
        return  # an empty block streams nothing (rather than spinning forever)

    def windows() -> Iterator[tuple[int, list, int, list | None]]:
        epoch = 0
        while epochs is None or epoch < epochs:
            carried = 0  # rays of this epoch before the window, modulo batch_size
            for number, (units, rows) in enumerate(
                reader.window_units(shuffle_buffer, seed, epoch)
            ):
                head = (batch_size - carried) % batch_size
                yield epoch, units, head, None if seed is None else [seed, epoch, number, 1]
                carried = (carried + rows) % batch_size
            epoch += 1

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ray-stream")
    pending: deque[tuple[int, Future]] = deque()
    schedule, carry = windows(), None
    try:
        while True:
            while len(pending) <= max(prefetch, 1) and (job := next(schedule, None)):
                epoch, units, head, job_seed = job
                future = pool.submit(
                    shuffled_window, reader, units, batch_size, head, job_seed, piece
                )
                pending.append((epoch, future))
            if not pending:
                return
            epoch, future = pending.popleft()
            first, fulls, last = future.result()
            if first is not None:
                carry = (
                    first if carry is None else {k: torch.cat([carry[k], first[k]]) for k in first}
                )
            if carry is not None and batch_rows(carry) == batch_size:
                yield carry
                carry = None
            yield from fulls
            if last is not None:
                carry = last
            if carry is not None and (not pending or pending[0][0] != epoch):  # epoch ends
                if not drop_last:
                    yield carry
                carry = None
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def batch_rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


_warned_unshuffled: set[str] = set()


def stream_block_rays(
    uri: str,
    block: int,
    batch_size: int = 4096,
    shuffle_buffer: int = 262144,
    seed: int = 0,
    prefetch: int = 2,
    columns: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    epochs: int | None = 1,
    drop_last: bool = False,
    shuffle: bool = True,
    shuffle_block: int | None = None,
) -> Iterator[Batch]:
    """Shuffled batches of ``batch_size`` rays of ``block`` from the ray store at ``uri``.

    Args:
        uri: store root (local path or ``s3://...``) holding ``manifest.json``.
        block: block id in ``range(manifest.partition.num_blocks)``.
        shuffle_buffer: rays decoded and mixed together (row groups from random places of the
            block).
        seed: with the epoch number, fixes the order (same seed -> same batches).
        prefetch: shuffle windows prepared ahead by the background threads.
        columns: subset of :data:`RAY_SCHEMA` names to read (default all).
        device: where batches go (``non_blocking`` copies).
        epochs: passes over the block; ``None`` streams forever.
        drop_last: drop each epoch's final short batch.
        shuffle: False streams in stored order (evaluation passes over large blocks).
        shuffle_block: rows of a piece, the unit of the within-window shuffle (stored rows that
            stay together); default ``batch_size // 8``: a batch is >= 8 pieces.

    Yields:
        dict of tensors, see the module docstring; every ray exactly once per epoch.
    """
    if batch_size < 1:
        raise MclnfError(f"batch_size must be >= 1, got {batch_size}")
    piece = shuffle_block if shuffle_block is not None else max(1, batch_size // 8)
    if piece < 1:
        raise MclnfError(f"shuffle_block must be >= 1, got {shuffle_block}")
    reader = BlockReader(uri, block, columns)
    if shuffle and not reader.pre_shuffled and uri not in _warned_unshuffled:
        _warned_unshuffled.add(uri)
        log.warning(
            "the rows of %s are stored unshuffled (IngestOptions.shuffle_rows off or unrecorded): "
            "batches are runs of %d consecutive stored rays; re-ingest for random batches",
            uri,
            piece,
        )
    order_seed = seed if shuffle else None
    batches = shuffled_batches(
        reader, batch_size, shuffle_buffer, order_seed, epochs, drop_last, prefetch, piece
    )
    device = torch.device(device)
    for batch in batches:
        if device.type != "cpu":
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        yield batch


def read_block_rays(uri: str, block: int, columns: Sequence[str] | None = None) -> Batch:
    """Every ray of ``block`` in stored order as one dict of tensors (for small eval sets)."""
    reader = BlockReader(uri, block, columns)
    parts = [reader.read(unit) for unit in reader.units]
    if not parts:
        parts = [table_to_numpy(RAY_SCHEMA.empty_table().select(reader.columns))]
    return assemble(parts, [(i, 0, len(p[reader.columns[0]])) for i, p in enumerate(parts)])
