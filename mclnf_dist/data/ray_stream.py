"""Streaming one block's rays out of a ray store as shuffled torch batches, in flat memory.

How: the block's shard files are picked from the manifest by the hive key ``block=NNNN`` with a
``pyarrow.dataset`` partition filter (no directory listing: listing a large S3 prefix is slow, and
the manifest names exactly the complete shards). Each epoch visits every row group of those files
once, in a random order across files, grouped into windows of ~``shuffle_buffer`` rays; a window's
rays are permuted together and cut into batches. Two background threads build windows (reading,
decoding, shuffling: pyarrow, numpy and torch release the GIL), up to ``prefetch`` windows ahead
of the consumer. Memory is O((prefetch + 2) * shuffle_buffer) rays, whatever the scene's size.

Batches are dicts of CPU (or ``device``) tensors::

    origin (B, 3) float32, direction (B, 3) float32, rgb (B, 3) float32 in [0, 1],
    image_id (B,) int64, pixel (B,) int64 (y * W + x), time / near / far (B,) float32
"""

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import torch
from torch import Tensor

from mclnf_dist.data.ray_store import RAY_SCHEMA, Manifest, load_manifest, schema_columns
from mclnf_dist.data.storage import arrow_filesystem, filesystem_for, join
from mclnf_dist.errors import MclnfError

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
            f"file of {record['rows']} rays, {record['bytes']} bytes, sha256 {record['sha256']}"
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
    """Ray-table columns as (read-only, zero-copy where possible) numpy arrays; lists as (N, 3)."""
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            out[name] = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, 3)
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def gather_batch(columns: dict[str, np.ndarray], rows: np.ndarray) -> Batch:
    """Tensors of ``rows`` of ``columns`` in training dtypes: rgb float32 in [0, 1], ids int64.

    Why gather per batch: one random gather straight into the batch is both the shuffle and the
    copy out of the (read-only) window, instead of permuting the whole window first.
    """
    out = {}
    for name, values in columns.items():
        tensor = torch.from_numpy(np.take(values, rows, axis=0))
        if name == "rgb":
            tensor = tensor.to(torch.float32).div_(255.0)
        elif name in ("image_id", "pixel"):
            tensor = tensor.to(torch.int64)
        out[name] = tensor
    return out


def batch_rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


_buffers = threading.local()


def window_buffer(name: str, like: np.ndarray, rows: int) -> np.ndarray:
    """A reusable per-thread array of ``rows`` rows shaped like ``like``.

    Why: a fresh ~10 MB window per shuffle costs more in page faults than the copy itself (measured
    19 ns/ray fresh vs 5 reused); batches are gathered copies, so reusing the window is safe.
    """
    store = _buffers.__dict__.setdefault("arrays", {})
    array = store.get(name)
    if array is None or len(array) < rows or array.dtype != like.dtype:
        array = store[name] = np.empty((max(rows, 1),) + like.shape[1:], dtype=like.dtype)
    return array[:rows]


def shuffled_window(
    reader: BlockReader, units: list, batch_size: int, head: int, seed: list | None
) -> tuple[Batch | None, list[Batch], Batch | None]:
    """Read ``units``, permute all their rays together (not if seed is None) and cut them into
    ``(head, full batches, tail)``: ``head`` rays complete the previous window's tail."""
    parts = [reader.read(unit) for unit in units]
    rows = sum(len(p[reader.columns[0]]) for p in parts)
    window = {
        k: np.concatenate([p[k] for p in parts], out=window_buffer(k, parts[0][k], rows))
        for k in reader.columns
    }
    if seed is None:
        order = np.arange(rows)
    else:
        order = np.random.default_rng(seed).permutation(rows)
    head = min(head, rows)
    full_end = head + (rows - head) // batch_size * batch_size
    fulls = [
        gather_batch(window, order[start : start + batch_size])
        for start in range(head, full_end, batch_size)
    ]
    first = gather_batch(window, order[:head]) if head else None
    last = gather_batch(window, order[full_end:]) if full_end < rows else None
    return first, fulls, last


def shuffled_batches(
    reader: BlockReader,
    batch_size: int,
    shuffle_buffer: int,
    seed: int | None,
    epochs: int | None,
    drop_last: bool,
    prefetch: int,
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
                future = pool.submit(shuffled_window, reader, units, batch_size, head, job_seed)
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
) -> Iterator[Batch]:
    """Shuffled batches of ``batch_size`` rays of ``block`` from the ray store at ``uri``.

    Args:
        uri: store root (local path or ``s3://...``) holding ``manifest.json``.
        block: block id in ``range(manifest.partition.num_blocks)``.
        shuffle_buffer: rays permuted together (row groups from random places of the block).
        seed: with the epoch number, fixes the order (same seed -> same batches).
        prefetch: shuffle windows prepared ahead by the background threads.
        columns: subset of :data:`RAY_SCHEMA` names to read (default all).
        device: where batches go (``non_blocking`` copies).
        epochs: passes over the block; ``None`` streams forever.
        drop_last: drop each epoch's final short batch.
        shuffle: False streams in stored order (evaluation passes over large blocks).

    Yields:
        dict of tensors, see the module docstring; every ray exactly once per epoch.
    """
    if batch_size < 1:
        raise MclnfError(f"batch_size must be >= 1, got {batch_size}")
    reader = BlockReader(uri, block, columns)
    order_seed = seed if shuffle else None
    batches = shuffled_batches(
        reader, batch_size, shuffle_buffer, order_seed, epochs, drop_last, prefetch
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
    window = {k: np.concatenate([p[k] for p in parts]) for k in reader.columns}
    return gather_batch(window, np.arange(len(window[reader.columns[0]])))
