"""S3 safety against a real S3-protocol server on loopback (moto): a bucket is never created
implicitly, and an unusable store (missing bucket, unreachable endpoint, refused credentials) is
one MclnfError line naming the URI, the bucket, the endpoint and the cause."""

import os
import socket
import subprocess
import sys
import time

import boto3
import pytest

from mclnf_dist.distributed.checkpoints import CheckpointStore
from mclnf_dist.errors import MclnfError
from mclnf_dist.storage import check_store, ensure_folder, filesystem_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def buckets(endpoint: str) -> set[str]:
    return {b["Name"] for b in boto3.client("s3", endpoint_url=endpoint).list_buckets()["Buckets"]}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_missing_bucket_is_refused_and_never_created(s3_server, s3_bucket):
    before = buckets(s3_server)
    missing = "mclnf-no-such-bucket"
    with pytest.raises(MclnfError) as err:
        CheckpointStore(f"s3://{missing}/runs/demo")  # fs.makedirs would have created it
    line = one_line(err)
    assert repr(missing) in line and s3_server in line and "never created" in line
    with pytest.raises(MclnfError) as err:
        check_store(f"s3://{missing}/rays", "--data.data-uri")
    line = one_line(err)
    assert "--data.data-uri" in line and repr(missing) in line and s3_server in line
    assert "does not exist" in line
    assert buckets(s3_server) == before

    CheckpointStore(f"{s3_bucket}/runs/demo")  # an existing bucket: fine, nothing created
    ensure_folder(*filesystem_for(f"{s3_bucket}/a/b"))
    check_store(f"{s3_bucket}/runs", "--storage-uri")  # list + probe write and delete
    bucket = s3_bucket.removeprefix("s3://")
    listing = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=bucket)
    assert listing.get("KeyCount", 0) == 0  # the write probe was deleted
    assert buckets(s3_server) == before


def test_an_unreachable_endpoint_is_one_line_within_seconds(s3_server, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    started = time.monotonic()
    with pytest.raises(MclnfError) as err:
        check_store("s3://mclnf-city/runs", "--storage-uri", timeout=2.0)
    line = one_line(err)
    assert time.monotonic() - started < 10
    assert closed in line and "'mclnf-city'" in line and "cannot be reached" in line


@pytest.fixture(scope="module")
def s3_with_auth():
    """A second moto server that checks credentials (IAM auth from its first request on)."""
    port = free_port()
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_refused_credentials_are_one_line(s3_with_auth, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(MclnfError) as err:
        check_store("s3://mclnf-city/rays", "ingest URI", write=False)
    line = one_line(err)
    assert "ingest URI s3://mclnf-city/rays" in line and s3_with_auth in line
    assert "credentials were refused (InvalidAccessKeyId)" in line


def test_local_and_memory_uris_are_not_probed(tmp_path):
    check_store(str(tmp_path / "not-yet"), "--storage-uri")  # local checks live elsewhere
    check_store("", "--data.data-uri")  # an unset URI
    assert not (tmp_path / "not-yet").exists()
    ensure_folder(*filesystem_for(tmp_path / "made" / "here"))
    assert (tmp_path / "made" / "here").is_dir()
