"""Versioned checkpoints of the meta-initialisation at any fsspec URI (local path, ``s3://``).

A checkpoint is one ``torch.save`` blob ``<uri>/meta-init-<version>.pt`` written atomically (temp
file + rename locally, a single PUT on S3), so a crash never leaves a torn file; the newest
*readable* version wins on restore, and older ones are pruned after a new one is safely written.
"""

import io
import re

import torch

from mclnf_dist.errors import MclnfError
from mclnf_dist.storage import ensure_folder, filesystem_for, join, write_atomic

NAME = re.compile(r"meta-init-(\d{8})\.pt$")


class CheckpointStore:
    """Save / restore versioned state dicts under one URI."""

    def __init__(self, uri: str, keep: int = 3) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_for(uri)
        self.keep = keep
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

    def save(self, version: int, state: dict) -> str:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = join(self.root, f"meta-init-{version:08d}.pt")
        try:
            write_atomic(path, buffer.getvalue(), fs=self.fs)
        except OSError as err:
            raise MclnfError(f"checkpoint {path} could not be written: {err}") from err
        for old in self.versions()[: -self.keep]:
            self.fs.rm(join(self.root, f"meta-init-{old:08d}.pt"))
        return path

    def load_latest(self) -> tuple[int, dict] | None:
        """(version, state) of the newest readable checkpoint, or None if there is none."""
        for version in reversed(self.versions()):
            path = join(self.root, f"meta-init-{version:08d}.pt")
            try:
                with self.fs.open(path, "rb") as handle:
                    return version, torch.load(io.BytesIO(handle.read()), weights_only=False)
            except (OSError, RuntimeError, EOFError):
                continue  # unreadable: fall back to the previous version
        return None
