"""Checks that run before any work: the places a job will write to can be written.

A job that would fail after ingest and meta-training because its work folder cannot be written
stops at the start instead, with one line naming the folder and the flag.
"""

import errno
import uuid
from pathlib import Path

from mclnf_dist.errors import MclnfError
from mclnf_dist.storage import filesystem_for, is_local


def check_writable(uri: str, what: str) -> None:
    """Raise one :class:`MclnfError` line unless files can be written under ``uri``.

    A local folder is created (with its parents) and a probe file written and removed in it.
    ``what`` names the setting in the message (``--data.work-dir``).
    """
    fs, path = filesystem_for(uri)
    if not is_local(fs):
        # TODO(storage): remote stores (s3://) get their reachability/permission probe (endpoint,
        # bucket, credentials in one line, no implicit bucket creation) from the storage module.
        return
    folder = Path(path)
    probe = folder / f".write-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if isinstance(err, FileExistsError) or err.errno == errno.EEXIST:
            reason = "a file, not a folder, is in the way"
        elif isinstance(err, NotADirectoryError):
            reason = "a file, not a folder, is on its path"
        raise MclnfError(
            f"{what} {uri} is not writable ({reason}; expected a folder this user can write)"
        ) from None
