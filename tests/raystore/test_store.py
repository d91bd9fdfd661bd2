"""Ingest into the ray store on real Ray tasks: exact round trip, idempotence, crash and resume."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mclnf_dist import faults
from mclnf_dist.errors import MclnfError
from mclnf_dist.nerf.rays import camera_rays
from mclnf_dist.raystore.ingest import ingest_scene
from mclnf_dist.raystore.store import IngestOptions, load_manifest
from mclnf_dist.raystore.stream import read_block_rays
from mclnf_dist.scenes.partition import load_partition
from mclnf_dist.scenes.scene import load_scene
from mclnf_dist.storage import TEMP_MARK, this_host

WIDTH, HEIGHT = 6, 5  # of the tiny scene (tests/raystore/conftest.py)
# every frame of the tiny scene (it has no splits) is a training view
OPTIONS = dict(blocks_x=2, blocks_y=2, frames_per_chunk=2, rows_per_group=16, progress=False,
               holdout_every=0)  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory, tiny_scene_factory):
    return tiny_scene_factory(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def clean_store(scene, ray_local, tmp_path_factory):
    """A complete ingest of the tiny scene (3 chunks of 2 frames, 2x2 blocks)."""
    uri = str(tmp_path_factory.mktemp("clean") / "rays")
    return uri, ingest_scene(scene[0], uri, IngestOptions(**OPTIONS))


def all_rays(uri: str) -> dict[int, dict[str, np.ndarray]]:
    manifest = load_manifest(uri)
    blocks = range(manifest.partition.num_blocks)
    return {b: {k: v.numpy() for k, v in read_block_rays(uri, b).items()} for b in blocks}


def test_every_pixel_round_trips_exactly(scene, clean_store):
    root, images = scene
    uri, manifest = clean_store
    source = load_scene(root, holdout_every=0)
    partition = load_partition(uri)
    assert partition.to_dict() == manifest.partition.to_dict()
    seen: dict[tuple[int, int], set[int]] = {}
    for block, rays in all_rays(uri).items():
        assert len(rays["pixel"]) == manifest.block_rows[block]
        for i, (image_id, pixel) in enumerate(zip(rays["image_id"], rays["pixel"], strict=True)):
            assert block not in seen.setdefault((image_id, pixel), set())  # no duplicates
            seen[(image_id, pixel)].add(block)
            y, x = divmod(pixel, WIDTH)
            assert np.array_equal(rays["rgb"][i] * 255, images[image_id][y, x].astype(np.float32))
        for image_id in np.unique(rays["image_id"]):
            frame = source.frames[image_id]
            origins, directions = camera_rays(frame.c2w, 5.0, 5.0, 3.0, 2.5, WIDTH, HEIGHT)
            mine = rays["image_id"] == image_id
            np.testing.assert_array_equal(rays["origin"][mine], origins[rays["pixel"][mine]])
            np.testing.assert_array_equal(rays["direction"][mine], directions[rays["pixel"][mine]])
    assert set(seen) == {(i, p) for i in range(6) for p in range(WIDTH * HEIGHT)}
    # Every stored ray satisfies the partition's membership rule for its block.
    for block, part in all_rays(uri).items():
        member = partition.ray_blocks(part["origin"], part["direction"], part["near"], part["far"])
        assert member[:, block].all()
    assert sum(len(b) > 1 for b in seen.values()) > 0  # the overlap margin shares some rays
    assert sum(manifest.block_rows.values()) == sum(s["rows"] for s in manifest.shards)


def test_near_far_clipped_to_scene_box(clean_store):
    uri, _ = clean_store
    box = np.array([[-1, -1, 0], [5, 3, 2]])  # the tiny scene's scene_box
    for rays in all_rays(uri).values():
        hit = rays["far"] > rays["near"]
        assert hit.all()  # every camera looks down into the box
        for depth in (rays["near"], rays["far"]):
            points = rays["origin"] + depth[:, None] * rays["direction"]
            assert (points >= box[0] - 1e-4).all() and (points <= box[1] + 1e-4).all()
            on_face = np.isclose(points, box[0], atol=1e-4) | np.isclose(points, box[1], atol=1e-4)
            assert on_face.any(axis=1).all()  # entry and exit points lie on the box surface
        assert np.allclose(rays["origin"][:, 2] + rays["near"] * rays["direction"][:, 2], 2.0)


def test_manifest_checksums_and_layout(clean_store):
    uri, manifest = clean_store
    data = json.loads(Path(uri, "manifest.json").read_text())
    assert data["schema_version"] == 1 and data["source"]["frames"] == 6
    assert len(data["source"]["transforms_sha256"]) == 64
    assert data["columns"]["origin"] == "fixed_size_list<float>[3]"
    assert data["options"]["shuffle_rows"] is True  # readers rely on pre-shuffled rows
    for shard in manifest.shards:
        assert shard["file"].startswith(f"block={shard['block']:04d}/part-")
        payload = Path(uri, shard["file"]).read_bytes()
        assert hashlib.sha256(payload).hexdigest() == shard["sha256"]
        assert len(payload) == shard["bytes"]


def test_rerun_is_a_no_op(scene, clean_store):
    uri, manifest = clean_store
    files = [Path(uri, s["file"]) for s in manifest.shards]
    files += [Path(uri, name) for name in ("manifest.json", "partition.json", "_ingest.json")]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = ingest_scene(scene[0], uri, IngestOptions(**OPTIONS))
    assert again.shards == manifest.shards
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_other_options_or_source_never_overwrite(scene, clean_store, tmp_path, tiny_scene_factory):
    uri, _ = clean_store
    with pytest.raises(MclnfError, match=r"manifest\.json was written with options\.blocks_x=2"):
        ingest_scene(scene[0], uri, IngestOptions(**{**OPTIONS, "blocks_x": 3}))
    changed, _ = tiny_scene_factory(tmp_path / "other", seed=1)
    meta = json.loads(Path(changed, "transforms.json").read_text())
    meta["far"] = 11.0
    Path(changed, "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(MclnfError, match=r"source\.transforms_sha256"):
        ingest_scene(changed, uri, IngestOptions(**OPTIONS))


def test_a_store_of_another_layout_is_reused_as_written(scene, clean_store):
    """Row-group size, codec and chunking say how rays sit in files, not which rays: a re-run
    under other layout defaults (row groups of 16384 since they were 65536) reuses the store
    as written, touching nothing; other content options are still refused."""
    uri, manifest = clean_store
    files = [Path(uri, s["file"]) for s in manifest.shards]
    stamps = [f.stat().st_mtime_ns for f in files]
    layout = dict(rows_per_group=64, compression="zstd", frames_per_chunk=3)
    again = ingest_scene(scene[0], uri, IngestOptions(**{**OPTIONS, **layout}))
    assert again.shards == manifest.shards and again.options == manifest.options
    assert [f.stat().st_mtime_ns for f in files] == stamps
    with pytest.raises(MclnfError, match=r"options\.overlap"):
        ingest_scene(scene[0], uri, IngestOptions(**{**OPTIONS, **layout, "overlap": 0.3}))


def test_rows_are_stored_shuffled_and_deterministic(scene, clean_store, tmp_path):
    """Each shard holds its chunk's rays of the block in a seeded random order, not pixel order;
    the same ingest writes the same bytes (so resumes and re-runs stay exact)."""
    uri, manifest = clean_store
    shuffled = 0
    for shard in manifest.shards:
        table = pq.read_table(Path(uri, shard["file"]), columns=["image_id", "pixel"])
        keys = table["image_id"].to_numpy() * 1000 + table["pixel"].to_numpy()
        assert len(np.unique(keys)) == len(keys) == shard["rows"]
        shuffled += len(keys) > 8 and not np.array_equal(keys, np.sort(keys))
    assert shuffled >= len([s for s in manifest.shards if s["rows"] > 8]) > 0
    again = ingest_scene(scene[0], str(tmp_path / "again"), IngestOptions(**OPTIONS))
    assert again.shards == manifest.shards  # same sha256 per shard
    plain = ingest_scene(
        scene[0], str(tmp_path / "plain"), IngestOptions(**OPTIONS, shuffle_rows=False)
    )
    assert plain.block_rows == manifest.block_rows
    assert plain.options["shuffle_rows"] is False
    for block in range(4):
        stores = (str(tmp_path / "plain"), uri)
        rays = [read_block_rays(store, block) for store in stores]
        plain_keys, mixed_keys = (r["image_id"] * 1000 + r["pixel"] for r in rays)
        assert torch.equal(plain_keys, plain_keys.sort().values)  # unshuffled: pixel order
        assert torch.equal(plain_keys.sort().values, mixed_keys.sort().values)


def test_store_from_before_shuffle_rows_is_read_but_never_overwritten(scene, clean_store, tmp_path):
    """Output written before ``shuffle_rows`` existed: still readable, and a re-ingest into it is
    an error naming the field (its rows are not shuffled, so it is other output)."""
    uri = str(tmp_path / "old")
    shutil.copytree(clean_store[0], uri)
    for name in ("manifest.json", "_ingest.json"):
        record = json.loads(Path(uri, name).read_text())
        del record["options"]["shuffle_rows"]
        Path(uri, name).write_text(json.dumps(record))
    assert sum(len(read_block_rays(uri, b)["pixel"]) for b in range(4)) == sum(
        clean_store[1].block_rows.values()
    )
    with pytest.raises(MclnfError, match=r"options\.shuffle_rows=None, this ingest has .*=True"):
        ingest_scene(scene[0], uri, IngestOptions(**OPTIONS))


def test_crash_then_resume_gives_exactly_the_clean_result(
    scene, clean_store, tmp_path, monkeypatch
):
    clean_uri, clean = clean_store
    uri = str(tmp_path / "rays")
    monkeypatch.setenv(faults.INGEST_CHUNK, "1")
    with pytest.raises(MclnfError, match=r"chunk 1 \(frames 2\.\.3\).*injected failure"):
        ingest_scene(scene[0], uri, IngestOptions(**OPTIONS))
    monkeypatch.delenv(faults.INGEST_CHUNK)
    assert not os.path.exists(f"{uri}/manifest.json")
    assert not os.path.exists(f"{uri}/_chunks/chunk-00001.json")
    partial = [n for n in Path(uri).glob("block=*/part-00001.parquet")]
    assert partial  # the failed chunk left a shard behind: the resume must overwrite it
    crashed = subprocess.Popen([sys.executable, "-c", "pass"])  # a writer that died
    crashed.wait()
    name = f".part-00001.parquet{TEMP_MARK}{this_host()}-{crashed.pid}-{'d' * 32}"
    Path(partial[0].parent, name).write_bytes(b"half a file")
    resumed = ingest_scene(scene[0], uri, IngestOptions(**OPTIONS))
    assert resumed.shards == clean.shards  # same files, same rows, same bytes
    assert resumed.block_rows == clean.block_rows
    assert not list(Path(uri).glob("block=*/.*tmp-*"))
    # Lose the manifest and a shard after a full run: the re-run restores exactly that.
    os.remove(f"{uri}/manifest.json")
    lost = Path(uri, clean.shards[2]["file"])
    lost.unlink()
    again = ingest_scene(scene[0], uri, IngestOptions(**OPTIONS))
    assert again.shards == clean.shards and lost.exists()
    for block in range(4):
        np.testing.assert_array_equal(
            read_block_rays(uri, block)["pixel"], read_block_rays(clean_uri, block)["pixel"]
        )


def test_time_slices(tmp_path, ray_local, tiny_scene_factory):
    root, _ = tiny_scene_factory(tmp_path / "timed", times=True)
    options = IngestOptions(**{**OPTIONS, "blocks_y": 1, "time_slices": 2})
    manifest = ingest_scene(root, str(tmp_path / "rays"), options)
    assert manifest.partition.num_blocks == 4
    for block in range(4):
        times = read_block_rays(str(tmp_path / "rays"), block)["time"].numpy()
        assert ((times >= 0.5) == (block % 2 == 1)).all()  # time slice = block id mod 2


def test_cli_make_city_ingest_info(tmp_path, ray_local, capsys):
    from mclnf_dist.jobs.dataset import main

    scene, uri = str(tmp_path / "city"), str(tmp_path / "rays")
    city = ["--blocks-x", "1", "--blocks-y", "1", "--width", "12", "--height", "8"]
    main(["make-city", scene, *city, "--aerial-views-per-block", "2"])
    main(["ingest", scene, uri, "--blocks-x", "2", "--blocks-y", "1", "--no-progress"])
    main(["info", uri])
    made, ingested, *info = capsys.readouterr().out.strip().splitlines()
    assert json.loads(made)["scene"] == scene
    summary = json.loads("\n".join(info))
    assert summary == json.loads(ingested)
    assert summary["blocks"] == 2 and summary["rays"] >= summary["source"]["pixels"] > 0
    with pytest.raises(MclnfError, match="options.blocks_x=2"):
        main(["ingest", scene, uri, "--blocks-x", "3", "--no-progress"])


def verify_cli(capsys, uri: str) -> tuple[int, list[str]]:
    """``mclnf dataset verify URI`` in-process: (exit status, stdout lines)."""
    from mclnf_dist.cli import main

    try:
        main(["dataset", "verify", uri])
        status = 0
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().out.splitlines()


def test_a_flipped_byte_is_caught_on_first_read_and_by_verify(clean_store, tmp_path, capsys):
    uri = str(tmp_path / "rays")
    shutil.copytree(clean_store[0], uri)
    status, lines = verify_cli(capsys, uri)
    assert status == 0 and json.loads(lines[-1])["bad"] == 0 and len(lines) == 1

    record = max(load_manifest(uri).shards, key=lambda s: s["bytes"])
    path = Path(uri) / record["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte: same size, Parquet may still decode it
    path.write_bytes(bytes(data))

    with pytest.raises(MclnfError) as err:
        read_block_rays(uri, record["block"])  # the first read of that shard in this process
    line = str(err.value)
    assert "\n" not in line and str(path) in line and f"{uri}/manifest.json" in line
    assert record["sha256"] in line
    status, lines = verify_cli(capsys, uri)
    assert status == 1 and len(lines) == 2
    assert lines[0].startswith(f"shard {path} has sha256 ") and record["sha256"] in lines[0]
    assert json.loads(lines[1])["bad"] == 1
