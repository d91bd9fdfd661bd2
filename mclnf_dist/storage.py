"""One storage abstraction (fsspec) for every URI: local paths, ``s3://``, ``memory://``.

Why atomic writes: a reader (or a resumed ingest) must never see half a file. Locally we write
``.<name>.tmp-<uuid>`` in the target folder and rename it over the target (a rename within one
folder is atomic on POSIX). On S3 a single PUT is already atomic (an object appears whole or not at
all), so we upload the bytes in one request and there is no temporary object to clean up. The
leading dot of temporary names matters: ``pyarrow.dataset`` discovery ignores files starting with
``.`` or ``_``, so a crash mid-write never leaks a partial shard into a dataset scan.
"""

import json
import os
import uuid
from typing import Any
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

TEMP_MARK = ".tmp-"
"""Part of every temporary file name: ``.<name>.tmp-<uuid>``."""


def filesystem_for(uri: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``uri`` and the path inside it (no scheme, no trailing slash).

    For ``s3://`` the endpoint is taken from ``AWS_ENDPOINT_URL`` (an S3-compatible server such as
    MinIO or moto) and passed explicitly, so fsspec's instance cache keys on it.
    """
    uri = os.fspath(uri)
    kwargs: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if urlparse(uri).scheme in ("s3", "s3a") and endpoint:
        kwargs["endpoint_url"] = endpoint
    fs, path = fsspec.core.url_to_fs(uri, **kwargs)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local disk (where a temp-file + rename is needed for atomicity)."""
    return isinstance(fs, LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """``base/part1/part2`` with ``/`` separators (fsspec paths use ``/`` everywhere)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def write_atomic(
    target: str | os.PathLike, data: bytes | str | Any, fs: fsspec.AbstractFileSystem | None = None
) -> None:
    """Write ``data`` so readers see the old file, nothing, or all of it: the one atomic write.

    Args:
        target: a URI or local path; with ``fs``, a path inside ``fs``.
        data: bytes as they are, ``str`` as UTF-8, anything else as indented JSON with sorted keys
            (the same object always gives the same bytes; pass ``json.dumps`` text for another
            layout).
        fs: the filesystem ``target`` lives in (default: the one its URI names).
    """
    if fs is None:
        fs, path = filesystem_for(target)
    else:
        path = os.fspath(target)
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes | bytearray | memoryview):
        data = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    if not is_local(fs):
        fs.pipe_file(path, bytes(data))  # one PUT: atomic on S3
        return
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    temp = join(parent, f".{name}{TEMP_MARK}{uuid.uuid4().hex}")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """Parse the JSON file at ``path``."""
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def remove_stale_temporaries(fs: fsspec.AbstractFileSystem, root: str) -> int:
    """Delete temporary files left under ``root`` by a crashed writer; returns how many.

    Only local filesystems can have them (S3 writes are single PUTs). Call it only when no other
    writer is active on ``root``.
    """
    if not is_local(fs) or not fs.exists(root):
        return 0
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith(".") and TEMP_MARK in name:
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def arrow_filesystem(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """A ``pyarrow.fs`` filesystem for reading what ``fs`` holds, the fastest that fits.

    Local disk -> pyarrow's native local filesystem; S3 -> pyarrow's native (C++) S3 client with
    the endpoint from ``AWS_ENDPOINT_URL`` (it reads row groups in parallel, without the GIL);
    anything else (``memory://``, gcs, ...) -> the fsspec filesystem wrapped for pyarrow.
    """
    if is_local(fs):
        return pafs.LocalFileSystem()
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
