"""Versioned checkpoints of the meta-initialisation at any fsspec URI (local path, ``s3://``).

A checkpoint is one state file ``<uri>/meta-init-<version>.pt`` in the one state format
(:mod:`mclnf_dist.state`: atomic, read without running code, with the fingerprint of the settings
that shape it); the newest version wins on restore, and older ones are pruned after a new one is
safely written. An unreadable newest file is refused with one line, not skipped: writes are
atomic, so a torn file means something else wrote there.
"""

import re

from mclnf_dist.errors import MclnfError
from mclnf_dist.state import Fingerprint, check_fingerprint, load_state, read_state, save_state
from mclnf_dist.storage import ensure_folder, filesystem_for, join

NAME = re.compile(r"meta-init-(\d{8})\.pt$")
KIND = "meta-init checkpoint"


class CheckpointStore:
    """Save / restore versioned state dicts under one URI, all made under one fingerprint."""

    def __init__(self, uri: str, keep: int = 3, fingerprint: Fingerprint | None = None) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_for(uri)
        self.keep = keep
        self.fingerprint = fingerprint
        try:
            ensure_folder(self.fs, self.root)
        except OSError as err:
            raise MclnfError(f"checkpoint storage {uri} cannot be written: {err}") from err

    def versions(self) -> list[int]:
        """Versions present, oldest first."""
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        found = [NAME.search(name) for name in names]
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, version: int) -> str:
        return join(self.uri.rstrip("/"), f"meta-init-{version:08d}.pt")

    def save(self, version: int, state: dict) -> str:
        path = save_state(self.path(version), KIND, state, self.fingerprint)
        for old in self.versions()[: -self.keep]:
            self.fs.rm(join(self.root, f"meta-init-{old:08d}.pt"))
        return path

    def check_latest(self) -> int:
        """The newest version (0: none), after checking it was made under this fingerprint."""
        versions = self.versions()
        if not versions:
            return 0
        if self.fingerprint is not None:
            _, recorded = read_state(self.path(versions[-1]), KIND)
            check_fingerprint(self.path(versions[-1]), KIND, recorded, self.fingerprint)
        return versions[-1]

    def load_latest(self) -> tuple[int, dict] | None:
        """(version, state) of the newest checkpoint, or None if there is none."""
        versions = self.versions()
        if not versions:
            return None
        return versions[-1], load_state(self.path(versions[-1]), KIND, self.fingerprint)
