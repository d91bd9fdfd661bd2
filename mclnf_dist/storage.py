"""One storage abstraction (fsspec) for every URI: local paths, ``s3://``, ``memory://``.

Why atomic writes: a reader (or a resumed ingest) must never see half a file. Locally we write
``.<name>.tmp-<host>-<pid>-<uuid>`` in the target folder and rename it over the target (a rename
within one folder is atomic on POSIX). On S3 a single PUT is already atomic (an object appears
whole or not at all), so we upload the bytes in one request and there is no temporary object to
clean up. The leading dot of temporary names matters: ``pyarrow.dataset`` discovery ignores files
starting with ``.`` or ``_``, so a crash mid-write never leaks a partial shard into a dataset scan.
The writer (host, pid) in the name tells a crashed writer's leftovers from a live one's.

Buckets are never created here: :func:`ensure_folder` makes folders on local disk only and, for
``s3://``, checks that the bucket exists (a mistyped bucket name is an error, not a new bucket).
:func:`check_store` probes an ``s3://`` URI once, before any work, so an unreachable endpoint, a
missing bucket or refused credentials is one :class:`MclnfError` line, not a botocore traceback.
"""

import io
import json
import os
import re
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import fsspec
import numpy as np
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from mclnf_dist.errors import MclnfError

TEMP_MARK = ".tmp-"
"""Part of every temporary file name: ``.<name>.tmp-<host>-<pid>-<uuid>``."""
TEMP_WRITER = re.compile(r"\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{32}$")
STALE_TEMPORARY_SECONDS = 3600.0
"""A temporary this old is left over whoever wrote it (no write takes an hour)."""


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
    ensure_folder(fs, parent)
    temp = join(parent, temporary_name(name))
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_png(
    target: str | os.PathLike, image: np.ndarray, fs: fsspec.AbstractFileSystem | None = None
) -> str:
    """Atomically write uint8 (H, W, 3) ``image`` as PNG (same pixels give the same bytes);
    returns the path."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    write_atomic(target, buffer.getvalue(), fs=fs)
    return str(target)


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """Parse the JSON file at ``path``."""
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def this_host() -> str:
    """This machine's name as it appears in temporary names (no ``/``, no spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def temporary_name(name: str) -> str:
    """``.<name>.tmp-<host>-<pid>-<uuid>``: hidden from dataset scans, naming its writer."""
    return f".{name}{TEMP_MARK}{this_host()}-{os.getpid()}-{uuid.uuid4().hex}"


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this machine (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def is_stale_temporary(path: str, max_age: float = STALE_TEMPORARY_SECONDS) -> bool:
    """A temporary whose writer is gone: on this host with a dead pid, or older than
    ``max_age`` seconds (a writer on another host, or a name without a writer, is judged by age
    only: we cannot see its process)."""
    match = TEMP_WRITER.search(os.path.basename(path))
    if match and match["host"] == this_host() and not pid_alive(int(match["pid"])):
        return True
    try:
        return time.time() - os.path.getmtime(path) > max_age
    except FileNotFoundError:
        return False  # its writer just renamed or removed it


def remove_stale_temporaries(
    fs: fsspec.AbstractFileSystem, root: str, max_age: float = STALE_TEMPORARY_SECONDS
) -> int:
    """Delete temporary files left under ``root`` by crashed writers; returns how many.

    Only local filesystems can have them (S3 writes are single PUTs). A live writer's temporary
    (this host, pid alive, younger than ``max_age``) is never touched, so it is safe to call while
    other writers work on ``root``.
    """
    if not is_local(fs) or not fs.exists(root):
        return 0
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(".") and TEMP_MARK in name and is_stale_temporary(path, max_age):
                try:
                    os.remove(path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    """True for an ``s3://`` filesystem (s3fs)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("s3", "s3a")


def ensure_folder(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Make folder ``path`` on local disk (and in-memory stores); on S3 only check that its
    bucket exists: folders there are key prefixes, and a bucket is never created implicitly.

    Raises :class:`MclnfError` (one line: bucket and endpoint) if the bucket does not exist.
    """
    if not is_s3(fs):
        if is_local(fs) or "memory" in fs.protocol:
            fs.makedirs(path, exist_ok=True)
        return  # other object stores: folders are key prefixes, nothing to make
    bucket = path.strip("/").split("/", 1)[0]
    try:
        present = fs.exists(bucket)
    except (OSError, ValueError) as err:
        raise MclnfError(f"s3://{bucket} at {endpoint_name()} cannot be reached: {err}") from err
    if not present:
        raise MclnfError(
            f"bucket {bucket!r} does not exist at {endpoint_name()}; buckets are never created "
            "implicitly (check the URI, or create it first)"
        )


def endpoint_name() -> str:
    """The S3 endpoint URIs go to: ``AWS_ENDPOINT_URL`` or AWS itself (for messages)."""
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS S3 (no AWS_ENDPOINT_URL)"


REFUSED_CREDENTIALS = {
    "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
}  # fmt: skip
"""S3 error codes that mean "these credentials may not do this"."""


def check_store(uri: str, what: str, write: bool = True, timeout: float = 5.0) -> None:
    """Stop with one :class:`MclnfError` line if the ``s3://`` store ``uri`` cannot be used.

    One list of at most one key under the URI's prefix (reachable endpoint, existing bucket,
    accepted credentials) and, with ``write``, a probe object written and deleted there. The line
    names ``what`` (e.g. ``--storage-uri``), the URI, the bucket, the endpoint and the cause. One
    attempt, ``timeout`` seconds per connection and read: a wrong endpoint fails in seconds. The
    probe uses the same credential chain as s3fs (env, profile, instance role). Other URIs (local
    paths, ``memory://``) are not checked here.
    """
    fs, path = filesystem_for(uri)
    if not is_s3(fs):
        return
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.session import get_session

    bucket, _, prefix = path.strip("/").partition("/")
    where = f"{what} {uri}: bucket {bucket!r} at {endpoint_name()}"
    once = {"max_attempts": 1, "mode": "standard"}  # no retries: a wrong endpoint fails fast
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries=once)
    try:
        client = get_session().create_client(
            "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config
        )
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if write:
            key = join(prefix, temporary_name("write-probe")).lstrip("/")
            client.put_object(Bucket=bucket, Key=key, Body=b"")
            client.delete_object(Bucket=bucket, Key=key)
    except (ConnectionError, HTTPClientError) as err:
        raise MclnfError(f"{where} cannot be reached ({err}); check AWS_ENDPOINT_URL") from err
    except (NoCredentialsError, PartialCredentialsError) as err:
        raise MclnfError(
            f"{where}: no S3 credentials found ({err}); set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, a profile or an instance role"
        ) from err
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            raise MclnfError(
                f"{where} does not exist; buckets are never created implicitly"
            ) from err
        if code in REFUSED_CREDENTIALS:
            action = "write" if write else "read"
            raise MclnfError(
                f"{where}: the credentials were refused ({code}): check AWS_ACCESS_KEY_ID/"
                f"AWS_SECRET_ACCESS_KEY or the role's permission to {action} there"
            ) from err
        raise MclnfError(f"{where} cannot be used ({code}: {err})") from err
    except BotoCoreError as err:
        raise MclnfError(f"{where} cannot be used ({err})") from err


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
