"""Run folders: every run of a job writes into its own folder, locked while it runs, marked
complete last.

Why: a run name (``--run-name city-demo``) is shared by every run of that name, so two runs
must not write the same files, a re-run must not mix its files with an older run's, and readers
(``mclnf render``, ``--extend``) must never pick up a half-written run. So:

* a run is ``<name>/<run id>`` (the id: start time plus a random suffix); its checkpoints live
  under ``<storage>/<name>/<id>/`` and its outputs (results, city model, pictures) under
  ``<work_dir>/runs/<name>/<id>/`` (the same folder when storage is the default);
* a re-run of a name continues that name's latest *incomplete* run (its checkpoints are checked
  against the run's settings by their fingerprints); ``--fresh`` starts a new run instead;
* ``lock.json`` in the run's storage folder names its owner (host, pid) and is refreshed by a
  heartbeat thread: a second job finding a live lock stops with one line; a lock whose heartbeat
  is older than :data:`STALE_AFTER_S` (a killed job) is taken over;
* ``complete.json`` is written last, after every output: readers take only completed runs, the
  latest by default.
"""

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mclnf_dist.errors import MclnfError
from mclnf_dist.storage import filesystem_for, join, pid_alive, this_host, write_atomic

LOCK = "lock.json"
COMPLETE = "complete.json"
HEARTBEAT_S = 10.0
"""How often a running job refreshes its lock."""
STALE_AFTER_S = 60.0
"""A lock not refreshed for this long belongs to a job that died: it may be taken over."""


@dataclass(frozen=True)
class RunFolders:
    """Where one run writes."""

    name: str
    run_id: str
    out: Path
    """Outputs: results, city model, pictures (local)."""
    storage: str
    """Checkpoints: meta-init, blocks, Ray Train runs (local path or URI)."""
    resumed: bool
    """True when this continues an interrupted run of the same name."""

    @property
    def label(self) -> str:
        return f"{self.name}/{self.run_id}"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_ids(storage_root: str) -> list[str]:
    """Run ids under ``<storage>/<name>``, oldest first (ids sort by start time)."""
    fs, root = filesystem_for(storage_root)
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return []
    names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"]
    return sorted(n for n in names if n[:8].isdigit())


def is_complete(folder: str) -> bool:
    fs, root = filesystem_for(folder)
    return fs.exists(join(root, COMPLETE))


def open_run(work_dir: str, storage: str, name: str, fresh: bool) -> RunFolders:
    """This job's run of ``name``: the latest incomplete one (unless ``fresh``) or a new one."""
    by_name = join(storage.rstrip("/"), name)
    ids = run_ids(by_name)
    resumed = bool(ids) and not fresh and not is_complete(join(by_name, ids[-1]))
    run_id = ids[-1] if resumed else new_run_id()
    out = Path(work_dir) / "runs" / name / run_id
    return RunFolders(name, run_id, out, join(by_name, run_id), resumed)


def mark_complete(run: RunFolders, summary: dict) -> None:
    """Write ``complete.json`` in the run's output and storage folders: the last write of a run."""
    record = {"run": run.label, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary}
    write_atomic(str(run.out / COMPLETE), record)
    if join(str(run.out.resolve()), COMPLETE) != join(filesystem_for(run.storage)[1], COMPLETE):
        write_atomic(join(run.storage, COMPLETE), record)


class RunLock:
    """``lock.json`` in a run's storage folder, refreshed by a heartbeat while the job runs."""

    def __init__(self, folder: str, label: str) -> None:
        self.fs, self.root = filesystem_for(folder)
        self.path = join(self.root, LOCK)
        self.label = label
        self.owner = f"{this_host()}:{os.getpid()}"
        self.started = time.time()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def record(self) -> dict:
        return {"owner": self.owner, "started": self.started, "heartbeat": time.time()}

    def held_by_another(self) -> dict | None:
        """The live lock of another job, if any."""
        try:
            with self.fs.open(self.path, "rb") as handle:
                held = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a torn lock (cannot happen with atomic writes) counts as free
        if held.get("owner") == self.owner:
            return None
        if time.time() - float(held.get("heartbeat", 0)) > STALE_AFTER_S:
            return None  # its job died without releasing it
        host, _, pid = str(held.get("owner", "")).rpartition(":")
        if host == this_host() and pid.isdigit() and not pid_alive(int(pid)):
            return None  # a job on this machine that was killed
        return held

    def acquire(self) -> "RunLock":
        held = self.held_by_another()
        if held is None:
            write_atomic(self.path, self.record(), fs=self.fs)
            time.sleep(0.05)  # two jobs racing for a free lock: the later write wins, re-read
            held = self.held_by_another()
        if held is not None:
            age = time.time() - float(held["heartbeat"])
            raise MclnfError(
                f"run {self.label} is being written by another job ({held['owner']}, heartbeat "
                f"{age:.0f} s ago); wait for it to end, or use another --run-name"
            )
        self.thread = threading.Thread(target=self.beat, daemon=True, name="run-lock")
        self.thread.start()
        return self

    def beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                write_atomic(self.path, self.record(), fs=self.fs)
            except OSError:
                pass  # a missed beat is retried; the lock goes stale only after many

    def release(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        try:
            self.fs.rm(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def completed_runs(folder: str | Path) -> list[Path]:
    """Completed run folders under ``folder`` (a work dir, its ``runs/``, a ``runs/<name>``, or a
    run folder itself), oldest first by finish time."""
    folder = Path(folder)
    if (folder / "runs").is_dir():
        folder = folder / "runs"  # a work folder: its ray stores need no search
    found = [p.parent for p in folder.glob(f"**/{COMPLETE}") if (p.parent / "city_model").is_dir()]
    return sorted(found, key=lambda p: json.loads((p / COMPLETE).read_text()).get("finished", ""))


def city_model_folder(path: str | Path) -> Path:
    """The ``city_model`` folder a user's path names, from a completed run only.

    ``path``: a city model folder of a run, a run folder, or a folder holding runs (a work dir):
    then the latest completed run in it. Raises one line when the run did not complete.
    """
    path = Path(path)
    if path.name == "city_model" and path.is_dir():
        if not (path.parent / COMPLETE).exists():
            raise MclnfError(
                f"{path}: its run did not complete (no {COMPLETE} beside it); re-run it to finish, "
                "or name a completed run"
            )
        return path
    if not path.exists():
        raise MclnfError(f"{path}: no such folder (expected a run folder or a work folder)")
    runs = completed_runs(path)
    if not runs:
        raise MclnfError(
            f"{path}: no completed run there (expected a folder holding runs/<name>/<id>/ with "
            f"{COMPLETE}, written when a city job finishes)"
        )
    return runs[-1] / "city_model"
