"""The same ingest to a local folder and to ``s3://`` (a real S3-protocol server on loopback)."""

import boto3
import numpy as np

from mclnf_dist.raystore.ingest import ingest_scene
from mclnf_dist.raystore.store import IngestOptions, load_manifest
from mclnf_dist.raystore.stream import read_block_rays, stream_block_rays

OPTIONS = dict(blocks_x=2, blocks_y=1, frames_per_chunk=3, rows_per_group=32, progress=False)


def test_local_and_s3_ingest_give_identical_rays(
    tmp_path, ray_local, s3_server, s3_bucket, tiny_scene_factory
):
    root, _ = tiny_scene_factory(tmp_path / "scene")
    local_uri, s3_uri = str(tmp_path / "rays"), f"{s3_bucket}/city/rays"
    local = ingest_scene(root, local_uri, IngestOptions(**OPTIONS))
    remote = ingest_scene(root, s3_uri, IngestOptions(**OPTIONS))
    assert remote.shards == local.shards  # same files with the same bytes (sha256)
    assert load_manifest(s3_uri).shards == local.shards

    bucket = s3_bucket.removeprefix("s3://")
    listing = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=bucket)
    keys = {item["Key"] for item in listing["Contents"]}
    assert "city/rays/manifest.json" in keys and "city/rays/partition.json" in keys
    assert not [k for k in keys if ".tmp-" in k]  # single PUTs: no temporary objects

    for block in range(2):
        mine, theirs = read_block_rays(local_uri, block), read_block_rays(s3_uri, block)
        for name, values in mine.items():
            np.testing.assert_array_equal(values.numpy(), theirs[name].numpy(), err_msg=name)
        streamed = list(stream_block_rays(s3_uri, block, batch_size=64, seed=0))
        pixels = np.concatenate([(b["image_id"] * 1000 + b["pixel"]).numpy() for b in streamed])
        expected = (mine["image_id"] * 1000 + mine["pixel"]).numpy()
        np.testing.assert_array_equal(np.sort(pixels), np.sort(expected))

    again = ingest_scene(root, s3_uri, IngestOptions(**OPTIONS))  # complete: nothing to do
    assert again.shards == local.shards


def test_ingest_into_a_missing_bucket_is_one_line_before_ray(
    tmp_path, s3_server, tiny_scene_factory, capsys
):
    import pytest

    from mclnf_dist.cli import main

    root, _ = tiny_scene_factory(tmp_path / "scene")
    s3 = boto3.client("s3", endpoint_url=s3_server)
    before = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    with pytest.raises(SystemExit) as stop:
        main(["dataset", "ingest", root, "s3://mclnf-typo-bucket/rays", "--no-progress"])
    assert stop.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ingest URI s3://mclnf-typo-bucket")
    assert "'mclnf-typo-bucket'" in errors[0] and s3_server in errors[0]
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == before
