"""Streaming reader: exactly-once shuffled epochs, whole-block reads, clear errors."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mclnf_dist.data.partition import BlockPartition
from mclnf_dist.data.ray_store import IngestOptions, write_store
from mclnf_dist.data.ray_stream import read_block_rays, stream_block_rays
from mclnf_dist.errors import MclnfError


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


def test_unshuffled_stream_is_in_stored_order(store):
    uri, shards = store
    batches = list(stream_block_rays(uri, 0, batch_size=300, shuffle=False, shuffle_buffer=256))
    assert [len(b["pixel"]) for b in batches] == [300] * 6 + [201]
    pixels = np.concatenate([b["pixel"].numpy() for b in batches])
    np.testing.assert_array_equal(pixels, np.concatenate([np.arange(n) for n in (1000, 700, 301)]))


def test_read_block_rays_returns_every_ray(store):
    uri, shards = store
    rays = read_block_rays(uri, 0)
    assert rays["origin"].shape == (2001, 3)
    np.testing.assert_array_equal(rays["origin"][:1000].numpy(), shards[0][1]["origin"])


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
    with pytest.raises(MclnfError, match=r"part-00001\.parquet is corrupt.*700 rays"):
        list(stream_block_rays(uri, 0, batch_size=256))


def test_schema_mismatch_names_file_and_expectation(store):
    uri, _ = store
    path = f"{uri}/block=0001/part-00000.parquet"
    table = pq.read_table(path)
    table = table.set_column(0, "origin", pa.array(np.zeros(50, np.float64)))
    pq.write_table(table, path)
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
    np.testing.assert_array_equal(rays["direction"][300:].numpy(), shards[1][1]["direction"])
    assert sum(len(b["pixel"]) for b in stream_block_rays(uri, 0, batch_size=128)) == 600
