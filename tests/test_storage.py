"""The one atomic write: bytes, text and JSON to local paths and object-store-like URIs, no
temporary left behind, URIs resolved through fsspec's public API, and only dead writers'
temporaries cleaned up."""

import json
import os
import subprocess
import sys
import time

import fsspec
import pytest

from mclnf_dist.storage import (
    STALE_TEMPORARY_SECONDS,
    TEMP_MARK,
    filesystem_for,
    remove_stale_temporaries,
    temporary_name,
    this_host,
    write_atomic,
)


def test_write_atomic_writes_bytes_text_and_sorted_json_locally(tmp_path):
    target = tmp_path / "deep" / "folder" / "file.bin"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_atomic(str(target), "héllo")  # overwrite, text as UTF-8
    assert target.read_text(encoding="utf-8") == "héllo"
    write_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == json.dumps(
        {"a": [1, 2], "b": 1}, indent=1, sort_keys=True
    ) + "\n"
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if TEMP_MARK in n]
    assert leftovers == []


def test_write_atomic_in_a_given_filesystem_and_on_memory(tmp_path):
    fs, root = filesystem_for(tmp_path)
    write_atomic(f"{root}/x.json", [3, 1], fs=fs)
    assert json.loads((tmp_path / "x.json").read_text()) == [3, 1]
    write_atomic("memory://plumbing-test/y.txt", "one put")
    assert fsspec.filesystem("memory").cat_file("/plumbing-test/y.txt") == b"one put"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "kept.txt"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, {"not json": object()})  # fails while encoding, before any write
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path, "a folder cannot be replaced by a file")
    assert target.read_text() == "old"
    assert remove_stale_temporaries(*filesystem_for(tmp_path)) == 0


def test_filesystem_for_resolves_local_and_s3_uris(tmp_path, monkeypatch):
    fs, path = filesystem_for(f"file://{tmp_path}/sub/")
    assert path == f"{tmp_path}/sub" and fs.protocol[0] == "file"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted here
    fs, path = filesystem_for("s3://bucket/prefix/store/")
    assert path == "bucket/prefix/store"
    assert fs.client_kwargs.get("endpoint_url", fs.endpoint_url) == "http://127.0.0.1:9"


def test_only_dead_or_old_writers_temporaries_are_removed(tmp_path):
    """Temporaries name their writer (host, pid): a live writer's survives a cleanup."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    host, hour_ago = this_host(), time.time() - 2 * STALE_TEMPORARY_SECONDS
    names = {
        "live": f".a.json{TEMP_MARK}{host}-{os.getpid()}-{'0' * 32}",
        "dead": f".b.json{TEMP_MARK}{host}-{dead_pid}-{'1' * 32}",
        "other host, fresh": f".c.json{TEMP_MARK}elsewhere-{dead_pid}-{'2' * 32}",
        "other host, old": f".d.json{TEMP_MARK}elsewhere-{os.getpid()}-{'3' * 32}",
        "no writer, old": f".e.json{TEMP_MARK}{'4' * 32}",
    }
    for key, name in names.items():
        (tmp_path / "block=0000").mkdir(exist_ok=True)
        path = tmp_path / "block=0000" / name
        path.write_bytes(b"partial")
        if "old" in key:
            os.utime(path, (hour_ago, hour_ago))
    assert temporary_name("x.json").startswith(f".x.json{TEMP_MARK}{host}-{os.getpid()}-")
    assert remove_stale_temporaries(*filesystem_for(tmp_path)) == 3
    left = sorted(p.name for p in (tmp_path / "block=0000").iterdir())
    assert left == sorted([names["live"], names["other host, fresh"]])
