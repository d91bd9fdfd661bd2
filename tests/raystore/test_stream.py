"""Streaming reader: exactly-once shuffled epochs, whole-block reads, clear errors."""

import glob
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.raystore.store import IngestOptions, write_store
from mclnf_dist.raystore.stream import read_block_rays, stream_block_rays
from mclnf_dist.scenes.partition import BlockPartition


def random_rays(count: int, image_id: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` random rays of one fake image: pixels 0..count-1."""
    return {
        "origin": rng.normal(size=(count, 3)).astype(np.float32),
        "direction": rng.normal(size=(count, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (count, 3), dtype=np.uint8),
        "image_id": np.full(count, image_id, dtype=np.int32),
        "pixel": np.arange(count, dtype=np.int32),
        "time": np.full(count, 0.5, dtype=np.float32),
        "near": np.full(count, 0.1, dtype=np.float32),
        "far": np.full(count, 9.0, dtype=np.float32),
    }


@pytest.fixture
def store(tmp_path):
    """A 2-block store: block 0 has 3 shards (1000 + 700 + 301 rays), block 1 one of 50."""
    rng = np.random.default_rng(0)
    part = BlockPartition.from_cameras(np.array([[0, 0, 0], [4, 0, 0.0]]), 2, 1)
    shards = [(0, random_rays(n, i, rng)) for i, n in enumerate([1000, 700, 301])]
    shards.append((1, random_rays(50, 9, rng)))
    uri = str(tmp_path / "store")
    write_store(uri, part, iter(shards), IngestOptions(rows_per_group=128))
    return uri, shards


def keys(batch: dict[str, torch.Tensor]) -> np.ndarray:
    return (batch["image_id"] * 100000 + batch["pixel"]).numpy()


def test_stream_covers_block_once_per_epoch_and_shuffles(store):
    uri, shards = store
    batches = list(stream_block_rays(uri, 0, batch_size=256, shuffle_buffer=512, epochs=2, seed=3))
    sizes = [len(b["origin"]) for b in batches]
    assert sizes == ([256] * 7 + [209]) * 2  # windows of uneven row groups, exact batches
    seen = np.concatenate([keys(b) for b in batches])
    expected = np.sort(
        np.concatenate([i * 100000 + np.arange(n) for i, n in [(0, 1000), (1, 700), (2, 301)]])
    )
    first, second = seen[:2001], seen[2001:]  # 2001 = 7 * 256 + 209: epochs end on a partial
    np.testing.assert_array_equal(np.sort(first), expected)
    np.testing.assert_array_equal(np.sort(second), expected)
    assert not np.array_equal(first, second)  # a new order every epoch
    other = list(stream_block_rays(uri, 0, batch_size=256, shuffle_buffer=512, seed=4))
    assert not np.array_equal(np.concatenate([keys(b) for b in other]), first)  # and seed
    assert np.mean(np.diff(first) == 1) < 0.05  # shuffled, not in file order
    assert len(np.unique(batches[0]["image_id"].numpy())) == 3  # rays mixed across shards


def test_batch_values_dtypes_and_determinism(store):
    uri, shards = store
    batch = next(iter(stream_block_rays(uri, 1, batch_size=64, seed=1)))
    assert batch["origin"].dtype == torch.float32 and batch["origin"].shape == (50, 3)
    assert batch["rgb"].dtype == torch.float32
    assert 0 <= batch["rgb"].min() <= batch["rgb"].max() <= 1
    assert batch["pixel"].dtype == torch.int64
    source = shards[3][1]
    order = batch["pixel"].numpy()
    np.testing.assert_array_equal(batch["origin"].numpy(), source["origin"][order])
    np.testing.assert_array_equal((batch["rgb"] * 255).round().numpy(), source["rgb"][order])
    again = next(iter(stream_block_rays(uri, 1, batch_size=64, seed=1)))
    assert torch.equal(again["pixel"], batch["pixel"])


def test_infinite_stream_and_column_subset(store):
    uri, _ = store
    stream = stream_block_rays(uri, 1, batch_size=20, epochs=None, columns=["rgb", "pixel"])
    batches = [next(stream) for _ in range(10)]  # 50 rays: 20 + 20 + 10 per epoch, forever
    stream.close()
    assert set(batches[0]) == {"rgb", "pixel"}
    assert sum(len(b["pixel"]) for b in batches[:6]) == 100
    with pytest.raises(MclnfError, match="unknown ray columns"):
        next(stream_block_rays(uri, 0, columns=["colour"]))


def stored(uri: str, block: int, column: str) -> np.ndarray:
    """``column`` of ``block``'s shards in stored (file, row) order, read with plain pyarrow."""
    files = sorted(glob.glob(f"{uri}/block={block:04d}/part-*.parquet"))
    return np.concatenate([pq.read_table(f, columns=[column])[column].to_numpy() for f in files])


def by_key(shards, rays: dict[str, torch.Tensor], name: str) -> np.ndarray:
    """The source values of column ``name`` for the (image_id, pixel) of each ray of ``rays``."""
    source = {image: columns for _, columns in shards for image in np.unique(columns["image_id"])}
    ids, pixels = rays["image_id"].numpy(), rays["pixel"].numpy()
    return np.stack([source[i][name][p] for i, p in zip(ids, pixels, strict=True)])


def test_rows_are_shuffled_at_write_and_unshuffled_stream_keeps_stored_order(store):
    uri, shards = store
    pixels = stored(uri, 0, "pixel")
    sources = [np.arange(n) for n in (1000, 700, 301)]
    assert np.mean(np.diff(pixels) == 1) < 0.01  # pre-shuffled rows, not in pixel order
    bounds = np.cumsum([0, 1000, 700, 301])
    for start, stop, source in zip(bounds, bounds[1:], sources, strict=False):
        np.testing.assert_array_equal(np.sort(pixels[start:stop]), source)  # within its shard
    batches = list(stream_block_rays(uri, 0, batch_size=300, shuffle=False, shuffle_buffer=256))
    assert [len(b["pixel"]) for b in batches] == [300] * 6 + [201]
    np.testing.assert_array_equal(np.concatenate([b["pixel"].numpy() for b in batches]), pixels)
    again = list(stream_block_rays(uri, 0, batch_size=300, shuffle=False, seed=5))
    assert all(torch.equal(a["pixel"], b["pixel"]) for a, b in zip(again, batches, strict=True))


def test_read_block_rays_returns_every_ray(store):
    uri, shards = store
    rays = read_block_rays(uri, 0)
    assert rays["origin"].shape == (2001, 3)
    np.testing.assert_array_equal(rays["pixel"].numpy(), stored(uri, 0, "pixel"))
    for name in ("origin", "direction", "near"):
        np.testing.assert_array_equal(rays[name].numpy(), by_key(shards, rays, name))
    np.testing.assert_array_equal(rays["rgb"].numpy() * 255, by_key(shards, rays, "rgb"))


def test_store_written_before_shuffle_rows_is_read_correctly(tmp_path, caplog):
    """An old store (rows in pixel order, no ``shuffle_rows`` in its manifest): exactly once per
    epoch, stored order without shuffle, a warning that batches are less random."""
    rng = np.random.default_rng(2)
    part = BlockPartition.from_cameras(np.zeros((1, 3)), 1, 1)
    shards = [(0, random_rays(n, i, rng)) for i, n in enumerate([900, 333])]
    uri = str(tmp_path / "old")
    write_store(uri, part, iter(shards), IngestOptions(rows_per_group=100, shuffle_rows=False))
    manifest = json.loads(open(f"{uri}/manifest.json").read())
    del manifest["options"]["shuffle_rows"]  # as written before the option existed
    open(f"{uri}/manifest.json", "w").write(json.dumps(manifest))
    expected = np.concatenate([np.arange(900), 100000 + np.arange(333)])
    rays = read_block_rays(uri, 0)
    np.testing.assert_array_equal(keys(rays), expected)
    np.testing.assert_array_equal(rays["origin"][900:].numpy(), shards[1][1]["origin"])
    with caplog.at_level("WARNING", logger="mclnf_dist.raystore.stream"):
        batches = list(stream_block_rays(uri, 0, batch_size=128, shuffle_buffer=300, epochs=2))
    assert "stored unshuffled" in caplog.text
    seen = np.concatenate([keys(b) for b in batches])
    first, second = seen[:1233], seen[1233:]
    np.testing.assert_array_equal(np.sort(first), expected)
    np.testing.assert_array_equal(np.sort(second), expected)
    assert not np.array_equal(first, expected) and not np.array_equal(first, second)
    plain = list(stream_block_rays(uri, 0, batch_size=128, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([keys(b) for b in plain]), expected)


def test_unknown_block(store):
    uri, _ = store
    with pytest.raises(MclnfError, match=r"block 2 does not exist.*0\.\.1"):
        next(stream_block_rays(uri, 2))
    with pytest.raises(MclnfError, match="block 7"):
        read_block_rays(uri, 7)


def test_corrupt_shard_names_the_file(store):
    uri, _ = store
    path = f"{uri}/block=0000/part-00001.parquet"
    data = bytearray(open(path, "rb").read())
    data[100:4000] = b"\x00" * 3900
    data[-12:-8] = b"\xff\xff\xff\x7f"  # footer length now nonsense as well
    open(path, "wb").write(bytes(data))
    with pytest.raises(MclnfError, match=r"part-00001\.parquet has sha256 \w+, the manifest"):
        list(stream_block_rays(uri, 0, batch_size=256))  # caught by the checksum first
    forget_checksums(uri, {"part-00001.parquet": len(data)})  # a manifest without sha256
    with pytest.raises(MclnfError, match=r"part-00001\.parquet is corrupt.*700 rays"):
        list(stream_block_rays(uri, 0, batch_size=256))


def forget_checksums(uri: str, sizes: dict[str, int]) -> None:
    """Drop the manifest's sha256 of the shards named in ``sizes`` and record these sizes (as a
    store written without checksums would), so the reader's structural checks are reached."""
    path = f"{uri}/manifest.json"
    manifest = json.loads(open(path).read())
    for shard in manifest["shards"]:
        name = shard["file"].rsplit("/", 1)[1]
        if name in sizes:
            shard.pop("sha256")
            shard["bytes"] = sizes[name]
    open(path, "w").write(json.dumps(manifest))


def test_schema_mismatch_names_file_and_expectation(store):
    uri, _ = store
    path = f"{uri}/block=0001/part-00000.parquet"
    table = pq.read_table(path)
    table = table.set_column(0, "origin", pa.array(np.zeros(50, np.float64)))
    pq.write_table(table, path)
    with pytest.raises(MclnfError, match=r"part-00000\.parquet has \d+ bytes, the manifest"):
        read_block_rays(uri, 1)
    forget_checksums(uri, {"part-00000.parquet": len(open(path, "rb").read())})
    with pytest.raises(MclnfError, match=r"part-00000\.parquet has columns.*expect"):
        read_block_rays(uri, 1)


def test_manifest_of_another_schema_version(store):
    uri, _ = store
    manifest = json.loads(open(f"{uri}/manifest.json").read())
    manifest["schema_version"] = 99
    open(f"{uri}/manifest.json", "w").write(json.dumps(manifest))
    with pytest.raises(MclnfError, match="schema_version 99"):
        read_block_rays(uri, 0)
    with pytest.raises(MclnfError, match="no ray store"):
        read_block_rays(uri + "-missing", 0)


def test_any_fsspec_filesystem(tmp_path):
    """``memory://`` goes through pyarrow's fsspec wrapper: same rays as on disk."""
    rng = np.random.default_rng(1)
    part = BlockPartition.from_cameras(np.zeros((1, 3)), 1, 1)
    shards = [(0, random_rays(300, i, rng)) for i in range(2)]
    uri = f"memory://ray-stream-test/{tmp_path.name}"
    write_store(uri, part, iter(shards), IngestOptions(rows_per_group=100))
    rays = read_block_rays(uri, 0)
    np.testing.assert_array_equal(rays["direction"].numpy(), by_key(shards, rays, "direction"))
    every = np.concatenate([np.arange(300), 100000 + np.arange(300)])
    np.testing.assert_array_equal(np.sort(keys(rays)), every)
    assert sum(len(b["pixel"]) for b in stream_block_rays(uri, 0, batch_size=128)) == 600


def test_batches_are_moving_pieces_of_random_row_groups(store):
    """A batch is >= 8 runs of stored rows (pieces of ``batch_size // 8``) from the window's row
    groups; the cuts between pieces move every epoch; ``shuffle_block`` sets the piece size."""
    uri, _ = store
    stored_keys = stored(uri, 0, "image_id") * 100000 + stored(uri, 0, "pixel")
    position = dict(zip(stored_keys.tolist(), range(len(stored_keys)), strict=True))

    def runs(batches) -> list[np.ndarray]:
        """Per batch, the stored positions where its runs of consecutive stored rows start."""
        out = []
        for batch in batches:
            where = np.array([position[k] for k in keys(batch).tolist()])
            out.append(where[np.concatenate([[0], np.flatnonzero(np.diff(where) != 1) + 1])])
        return out

    stream = stream_block_rays(uri, 0, batch_size=256, shuffle_buffer=512, epochs=2, seed=3)
    epochs = list(stream)
    first, second = runs(epochs[:8]), runs(epochs[8:])
    assert all(len(starts) >= 8 for starts in first[:-1] + second[:-1])  # full batches
    assert np.mean([len(starts) for starts in first[:-1]]) >= 8.5  # + row-group ends
    assert set(np.concatenate(first)) != set(np.concatenate(second))  # the cuts moved
    big = runs(stream_block_rays(uri, 0, batch_size=256, shuffle_buffer=512, shuffle_block=128))
    assert np.mean([len(starts) for starts in big[:-1]]) < 5
    with pytest.raises(MclnfError, match="shuffle_block"):
        next(stream_block_rays(uri, 0, shuffle_block=0))


def test_block_training_batches_draw_from_most_frames_at_the_default_layout(tmp_path):
    """The default row groups make a shuffle window span many shards: a capture of 48 frames
    (6 shards of 8 frames, 16384 rays a frame, as ingest writes it) streamed as block training
    streams it gives, within its first 64 batches, rays of at least 40 frames. At row groups
    of 65536 rays a window was 4 row groups, at most 32 frames, and training saw a few views at
    a time."""
    from mclnf_dist.distributed.train_config import BlockTrainingConfig

    rng = np.random.default_rng(0)
    part = BlockPartition.from_cameras(np.array([[0, 0, 0.0]]), 1, 1)
    frame_rays = 16384

    def shard(chunk: int) -> dict[str, np.ndarray]:
        frames = [random_rays(frame_rays, chunk * 8 + i, rng) for i in range(8)]
        rays = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
        order = rng.permutation(len(rays["pixel"]))  # ingest stores a shard's rows shuffled
        return {k: v[order] for k, v in rays.items()}

    uri = str(tmp_path / "store")
    write_store(uri, part, ((0, shard(c)) for c in range(6)), IngestOptions())
    cfg = BlockTrainingConfig()
    stream = stream_block_rays(uri, 0, cfg.batch_rays, cfg.shuffle_buffer, seed=0, epochs=None)
    frames = {int(i) for _ in range(64) for i in next(stream)["image_id"].unique()}
    assert len(frames) >= 40
