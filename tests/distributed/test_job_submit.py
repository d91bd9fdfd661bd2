"""The city job through ``ray job submit`` against a real local Ray head (own process group,
ports and temp dir): the working directory is uploaded (without ``.venv`` and outputs), the job
runs on the venv's Python and succeeds with its results. Only this head is stopped afterwards
(never ``ray stop``: it kills every Ray process on the machine).
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from mclnf_dist.runs import completed_runs

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
EXCLUDES = [".venv", ".git", "outputs", "runs", "mlruns", "mlartifacts", "mlflow.db", "*.egg-info"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def clean_env() -> dict:
    """This session's environment without anything that points at another cluster or store."""
    drop = ("RAY_ADDRESS", "RAY_AUTH", "MLFLOW_", "AWS_", "MCLNF_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # job entrypoint `python`
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the `ray start --block` leader (it shuts its children down), then SIGKILL the
    process group of whatever is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


@pytest.fixture
def ray_head():
    """A Ray head with 2 CPUs and the dashboard (job server), every port explicit and free."""
    temp = Path(tempfile.mkdtemp(prefix="mclnf-js-", dir="/tmp"))  # short: socket paths
    gcs, dash, client, agent_http, agent_grpc, runtime_env, metrics, nm, om = free_ports(9)
    cmd = [
        RAY, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0",
        "--port", str(gcs), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics),
        "--node-manager-port", str(nm), "--object-manager-port", str(om),
        "--min-worker-port", "0", "--max-worker-port", "0",  # any free port: no shared range
        "--object-store-memory", str(256 * 1024 * 1024), "--temp-dir", str(temp),
    ]  # fmt: skip
    log = open(temp / "head.log", "w")
    head = subprocess.Popen(
        cmd, env=clean_env(), cwd=temp, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    # Should this pytest process die before the finally below: end the head's group too.
    watchdog = subprocess.Popen(
        ["bash", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; "
         f"kill -TERM {head.pid}; sleep 15; kill -KILL -- -{head.pid}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (temp / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (temp / "head.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as answer:
                    if (
                        answer.status == 200
                        and "Ray runtime started" in (temp / "head.log").read_text()
                    ):
                        break
            except OSError:
                pass
            time.sleep(0.5)
        yield address
    finally:
        stop_group(head)
        log.close()
        watchdog.kill()
        watchdog.wait()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def test_ray_job_submit_runs_the_city_job(ray_head):
    work = Path(tempfile.mkdtemp(prefix="mclnf-job-", dir="/tmp"))
    try:
        pipeline = [
            "python", "pipelines/city_nerf.py",
            "--meta.outer-steps", "3", "--adapt.max-steps", "4", "--render-views", "1",
            "--block.steps", "4", "--block.batch-rays", "128", "--block.probe-rays", "128",
            "--data.fit-rays-per-block", "512", "--data.score-rays-per-block", "256",
            "--data.image-size", "24", "--data.views-per-block", "4",
            "--data.blocks-x", "2", "--data.blocks-y", "2", "--methods", "random", "maml",
            "--data.work-dir", str(work), "--tracking-uri", f"sqlite:///{work}/mlflow.db",
            "--run-name", f"job{time.time_ns()}",
        ]  # fmt: skip
        # `ray job submit` shell-quotes its arguments: a command line with && needs `bash -c`.
        # In the job's folder (the unpacked upload): which Python, and is the upload small?
        which = "import sys; print('JOB_PYTHON', sys.executable)"
        line = (
            f"python -c {shlex.quote(which)} && test ! -e .venv && "
            f'echo "UPLOAD_MB $(du -sm . | cut -f1)" && {shlex.join(pipeline)}'
        )
        runtime_env = {
            "excludes": EXCLUDES,
            "env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"},
        }
        submit = [
            RAY, "job", "submit", "--address", ray_head, "--working-dir", str(ROOT),
            "--runtime-env-json", json.dumps(runtime_env), "--", "bash", "-c", line,
        ]  # fmt: skip
        proc = subprocess.run(submit, env=clean_env(), capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        job = re.search(r"Job '(raysubmit_\w+)' succeeded", out)
        assert job, out[-5000:]
        python = re.search(r"JOB_PYTHON (\S+)", out)
        assert python and Path(python.group(1)).parent == VENV_BIN, out[-5000:]
        size = re.search(r"UPLOAD_MB (\d+)", out)  # no .venv (2 GB), no outputs
        assert size and int(size.group(1)) < 20, out[-5000:]
        status = subprocess.run(
            [RAY, "job", "status", "--address", ray_head, job.group(1)],
            env=clean_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        said = status.stdout + status.stderr
        assert f"Job '{job.group(1)}' succeeded" in said, said  # the server's own record
        (run,) = completed_runs(work)
        report = json.loads((run / "results.json").read_text())
        assert [r["method"] for r in report["results"]] == ["random", "maml"]
        assert (run / "novel_views.png").stat().st_size > 0
        assert "resolved config" in out  # the job's own output came back to the submitter
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
