"""The one state format: every checkpoint, ``theta_0`` asset and saved city model.

Why one format: the files a job reads back can come from a user, a shared bucket or an MLflow
artifact store, so reading one must never run code. Every state file is a ``torch.save`` of plain
data (tensors, numbers, strings, lists, dicts) wrapped as::

    {"format": "mclnf-state", "version": 1, "kind": "block checkpoint",
     "fingerprint": {"field.mlp.width": 64, ...}, "state": {...}}

and is read back with ``torch.load(weights_only=True)``, which refuses anything but those types
(a pickle whose ``__reduce__`` would run a command is rejected before it runs). Writes are atomic
(:func:`~mclnf_dist.storage.write_atomic`). A truncated, corrupt, foreign or unsafe file gives one
:class:`~mclnf_dist.errors.MclnfError` line naming it.

The **fingerprint** records the settings that shape a file's contents (field, plan, budget, data,
seed), flattened to ``{"block.steps": 300, ...}``. A resumed run compares it with its own and
stops with one line naming what differs (``--fresh`` starts the run over), so a checkpoint is
never continued under settings it was not made with.
"""

import dataclasses
import io
import pickle
import warnings
import zipfile
from typing import Any

from mclnf_dist.errors import MclnfError
from mclnf_dist.storage import filesystem_for, write_atomic

FORMAT = "mclnf-state"
VERSION = 1
Fingerprint = dict[str, Any]


def fingerprint(**parts: Any) -> Fingerprint:
    """The settings that shape a state file, flattened: ``fingerprint(block=cfg, seed=3)`` ->
    ``{"block.steps": 300, ..., "seed": 3}`` (dataclasses and dicts are walked; tuples become
    lists, so a fingerprint read back from a file compares equal)."""
    flat: Fingerprint = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list | tuple):
            flat[prefix] = [plain(v) for v in value]
        else:
            flat[prefix] = plain(value)

    walk("", parts)
    return flat


def plain(value: Any) -> Any:
    """A JSON-like scalar or list of one (nested tuples -> lists)."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def fingerprint_difference(recorded: Fingerprint, expected: Fingerprint) -> list[str]:
    """``["block.steps 300 -> 100", ...]``: every setting that differs (missing ones as ``-``)."""
    keys = sorted(set(recorded) | set(expected))
    return [
        f"{k} {recorded.get(k, '-')} -> {expected.get(k, '-')}"
        for k in keys
        if recorded.get(k, "-") != expected.get(k, "-")
    ]


def check_fingerprint(where: str, kind: str, recorded: Fingerprint, expected: Fingerprint) -> None:
    """Stop with one line when a state file was made under other settings than this run's."""
    changes = fingerprint_difference(recorded, expected)
    if changes:
        more = f"; and {len(changes) - 6} more" if len(changes) > 6 else ""
        shown = "; ".join(changes[:6]) + more
        raise MclnfError(
            f"{where}: this {kind} was written under other settings ({shown}); re-run with the "
            "settings it was made with to resume, or add --fresh to start a new run"
        )


def save_state(uri: str, kind: str, state: dict, fingerprint: Fingerprint | None = None) -> str:
    """Write ``state`` (plain data and tensors only) atomically at ``uri``; returns ``uri``."""
    import torch

    wrapped = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "fingerprint": dict(fingerprint or {}),
        "state": state,
    }
    buffer = io.BytesIO()
    torch.save(wrapped, buffer)
    try:
        write_atomic(uri, buffer.getvalue())
    except OSError as err:
        raise MclnfError(f"{uri}: the {kind} could not be written ({err})") from err
    return uri


def read_state(uri: str, kind: str) -> tuple[dict, Fingerprint]:
    """(state, fingerprint) of the state file at ``uri``, read without running any code.

    Raises :class:`MclnfError` (one line) when the file is missing, truncated, corrupt, not a
    state file of this product, holds something other than plain data, or is not a ``kind``.
    """
    import torch

    fs, path = filesystem_for(uri)
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise MclnfError(f"{uri}: no {kind} there") from None
    except OSError as err:
        raise MclnfError(f"{uri}: the {kind} cannot be read ({err})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a foreign pickle's protocol warning
            wrapped = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise MclnfError(f"{uri}: not a readable {kind} (corrupt: {len(data)} bytes)") from None
        raise MclnfError(
            f"{uri}: refused: it holds objects other than tensors and plain data (loading it "
            f"could run code); expected a {kind} written by mclnf"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError, OSError):
        raise MclnfError(
            f"{uri}: not a readable {kind} (truncated or corrupt, {len(data)} bytes)"
        ) from None
    if not isinstance(wrapped, dict) or wrapped.get("format") != FORMAT:
        raise MclnfError(f"{uri}: not an mclnf state file (expected a {kind} written by mclnf)")
    if wrapped.get("kind") != kind:
        raise MclnfError(f"{uri}: a {wrapped.get('kind')}, not a {kind}")
    if wrapped.get("version") != VERSION:
        raise MclnfError(
            f"{uri}: state format version {wrapped.get('version')}; this mclnf reads {VERSION}"
        )
    return wrapped["state"], dict(wrapped.get("fingerprint") or {})


def content_digest(tensors: dict[str, Any]) -> str:
    """A short sha256 of a dict of tensors (names, shapes, values): identifies an init."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:16]


def load_state(uri: str, kind: str, expected: Fingerprint | None = None) -> dict:
    """The state at ``uri``, checked against ``expected`` (see :func:`check_fingerprint`)."""
    state, recorded = read_state(uri, kind)
    if expected is not None:
        check_fingerprint(uri, kind, recorded, expected)
    return state
