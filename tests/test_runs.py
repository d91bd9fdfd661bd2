"""Run folders: a re-run continues the latest interrupted run (or a new one with ``fresh``), a
live lock of another job stops a second one with one line, a dead job's lock is taken over, and
readers see completed runs only."""

import json
import subprocess
import sys
import time

import pytest

from mclnf_dist.errors import MclnfError
from mclnf_dist.runs import (
    COMPLETE,
    LOCK,
    RunLock,
    city_model_folder,
    mark_complete,
    open_run,
)


def test_a_rerun_continues_the_interrupted_run_and_a_completed_one_starts_anew(tmp_path):
    work, storage = tmp_path / "work", str(tmp_path / "work" / "runs")
    first = open_run(str(work), storage, "demo", fresh=False)
    assert not first.resumed and first.out == work / "runs" / "demo" / first.run_id
    first.out.mkdir(parents=True)  # it started writing, then stopped
    again = open_run(str(work), storage, "demo", fresh=False)
    assert again.resumed and again.run_id == first.run_id
    fresh = open_run(str(work), storage, "demo", fresh=True)
    assert not fresh.resumed and fresh.run_id != first.run_id
    (first.out / "city_model").mkdir()
    mark_complete(first, {"mlflow_run_id": "x"})
    assert json.loads((first.out / COMPLETE).read_text())["run"] == first.label
    after = open_run(str(work), storage, "demo", fresh=False)
    assert not after.resumed and after.run_id != first.run_id
    assert city_model_folder(work) == first.out / "city_model"


def test_another_jobs_live_lock_refuses_and_a_dead_jobs_lock_is_taken(tmp_path):
    folder = str(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mclnf_dist.runs import RunLock; "
         f"RunLock({folder!r}, 'demo/1').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            MclnfError, match=r"run demo/1 is being written by another job \("
        ) as err:
            RunLock(folder, "demo/1").acquire()
        assert "\n" not in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(folder, "demo/1") as lock:  # its owner died: the lock is free
        assert json.loads((tmp_path / "run" / LOCK).read_text())["owner"] == lock.owner
    assert not (tmp_path / "run" / LOCK).exists()  # released


def test_a_stale_lock_of_another_host_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"owner": "elsewhere:1", "heartbeat": time.time()}))
    with pytest.raises(MclnfError, match="elsewhere:1"):
        RunLock(str(tmp_path), "demo/2").acquire()
    (tmp_path / LOCK).write_text(json.dumps({"owner": "elsewhere:1", "heartbeat": 0}))
    RunLock(str(tmp_path), "demo/2").acquire().release()


def test_run_folders_and_locks_on_s3(s3_bucket, tmp_path):
    """The same rules on an S3-protocol store (a real server on loopback)."""
    from mclnf_dist.storage import filesystem_for, write_atomic

    storage = f"{s3_bucket}/runs"
    first = open_run(str(tmp_path), storage, "demo", fresh=False)
    write_atomic(f"{first.storage}/meta-mse/meta_init/x.json", {"started": True})
    again = open_run(str(tmp_path), storage, "demo", fresh=False)
    assert again.resumed and again.run_id == first.run_id
    fs, lock = filesystem_for(f"{first.storage}/{LOCK}")
    write_atomic(f"{first.storage}/{LOCK}", {"owner": "elsewhere:1", "heartbeat": time.time()})
    with pytest.raises(MclnfError, match="elsewhere:1"):
        RunLock(first.storage, first.label).acquire()
    write_atomic(f"{first.storage}/{LOCK}", {"owner": "elsewhere:1", "heartbeat": 0})
    with RunLock(first.storage, first.label) as held:
        fs.invalidate_cache()
        assert json.loads(fs.cat_file(lock))["owner"] == held.owner
    fs.invalidate_cache()
    assert not fs.exists(lock)
