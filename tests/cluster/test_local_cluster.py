"""A real multi-node Ray cluster on this one machine: cluster/start_local_cluster.sh starts a head
and a worker node as separate `ray start` processes (own raylet, object store, temp dir, ports),
with Ray 2.60 token authentication. Checked from separate client processes (so this pytest
process's own Ray, if any, is untouched): two alive nodes, a task pinned to each, `ray job submit`
with the token (and without it: refused), and the KubeRay manifest's entrypoint run through a
KubeRay-style submitter shell. The cluster is stopped by its process-group ids even on failure.
"""

import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "cluster" / "start_local_cluster.sh"
STOP = ROOT / "cluster" / "stop_local_cluster.sh"
VENV_BIN = Path(sys.executable).parent
WORKERS = 1
# Settings the head is started with; jobs must see them (the cloud cluster's cluster.env and the
# KubeRay ConfigMap rely on the same inheritance).
HEAD_ENV = {
    "MLFLOW_TRACKING_URI": "http://mlflow.test:5000",
    "MCLNF_DATA_URI": "s3://mclnf-test/city",
    "MCLNF_STORAGE_URI": "s3://mclnf-test/runs",
}


def _ports_free(base: int) -> bool:
    """The fixed ports start_local_cluster.sh derives from --port, plus a sample of worker ports."""
    ports = [base, base + 1, base + 2]
    for i in range(WORKERS + 1):
        ports += [base + 10 + 10 * i + k for k in range(6)]
        ports += [base + 100 + 100 * i + k for k in (0, 50, 99)]
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def _pick_base() -> int:
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 40000, 10)
        if _ports_free(base):
            return base
    raise RuntimeError("no free port block for the local cluster")


def _clean_env() -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "MCLNF_", "MLFLOW_"))
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _read_env_file(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export ") :].split("=", 1)
            out[key] = value
    return out


def _force_kill(cluster_dir: Path) -> None:
    """Last resort when stop_local_cluster.sh failed: SIGKILL the recorded process groups."""
    pids = cluster_dir / "pids"
    if pids.exists():
        for pid in pids.read_text().split():
            try:
                os.killpg(int(pid), 9)
            except (ProcessLookupError, PermissionError, ValueError):
                pass


@pytest.fixture(scope="module")
def cluster():
    cluster_dir = Path(tempfile.mkdtemp(prefix="mclnf-rc-", dir="/tmp"))  # short: socket paths
    base = _pick_base()
    env = _clean_env() | HEAD_ENV
    # ~15-25 s normally; generous limits because other work on a 2-CPU machine can triple it.
    cmd = [str(START), "--workers", str(WORKERS), "--port", str(base), "--dir", str(cluster_dir)]
    cmd += ["--timeout", "150"]
    # Watchdog in its own session: stops the cluster should this pytest process die without
    # running the finally block below (SIGKILL, a killed CI job).
    watchdog = subprocess.Popen(
        [
            "bash",
            "-c",
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; "
            f"{shlex.quote(str(STOP))} --dir {shlex.quote(str(cluster_dir))} --grace 5; "
            f"rm -rf {shlex.quote(str(cluster_dir))}",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        start = subprocess.run(
            cmd, env=env, cwd=cluster_dir, capture_output=True, text=True, timeout=240
        )
        assert start.returncode == 0, start.stdout + start.stderr
        lines = start.stdout.splitlines()
        info = dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)
        client_env = _clean_env() | _read_env_file(Path(info["ENV_FILE"]))
        yield {"dir": cluster_dir, "info": info, "env": client_env, "base": base}
    finally:
        stop = subprocess.run(
            [str(STOP), "--dir", str(cluster_dir), "--grace", "10"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if stop.returncode != 0:
            _force_kill(cluster_dir)
        shutil.rmtree(cluster_dir, ignore_errors=True)
        watchdog.kill()
        watchdog.wait()


DRIVER = r"""
import json, os, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
nodes = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

pin = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes]
by_affinity = ray.get([where.options(scheduling_strategy=s).remote() for s in pin])
by_resource = ray.get([where.options(resources={f"local_node_{i}": 1}).remote()
                       for i in range(len(nodes))])
print("RESULT " + json.dumps({
    "nodes": [{"id": n["NodeID"], "resources": n["Resources"]} for n in nodes],
    "by_affinity": by_affinity, "by_resource": by_resource}))
ray.shutdown()
"""


def _result(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("RESULT ", "STUB "))]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].split(" ", 1)[1])


def test_two_nodes_and_a_task_pinned_to_each(cluster):
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER],
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = _result(proc)
    ids = [n["id"] for n in out["nodes"]]
    assert len(ids) == 1 + WORKERS == len(set(ids))
    assert out["by_affinity"] == ids  # each task ran on the node it was pinned to
    marker = {
        next(k for k in n["resources"] if k.startswith("local_node_")): n["id"]
        for n in out["nodes"]
    }
    assert out["by_resource"] == [marker[f"local_node_{i}"] for i in range(1 + WORKERS)]
    for n in out["nodes"]:
        assert n["resources"]["CPU"] == 1.0


def _submit(env: dict, entrypoint: str, *flags: str) -> subprocess.CompletedProcess:
    """`ray job submit` inside a bash command line, the way KubeRay's submitter runs it."""
    line = f"ray job submit --address {env['RAY_JOB_ADDRESS']} {' '.join(flags)} -- {entrypoint} ;"
    return subprocess.run(
        ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120
    )


def test_job_submit_with_token_runs_the_kuberay_entrypoint(cluster, tmp_path):
    """The RayJob manifest's entrypoint, verbatim, against a stub pipelines/city_nerf.py: the
    $MCLNF_* variables must expand on the head (not in the submitter's shell), and the job sees
    MLFLOW_TRACKING_URI from the head's environment."""
    docs = yaml.safe_load_all((ROOT / "cluster" / "kuberay-rayjob.yaml").read_text())
    (job,) = [d for d in docs if d and d["kind"] == "RayJob"]
    stub = tmp_path / "wd" / "pipelines" / "city_nerf.py"
    stub.parent.mkdir(parents=True)
    stub.write_text(
        "import json, os, sys\n"
        "print('STUB ' + json.dumps({'argv': sys.argv[1:], "
        "'mlflow': os.environ.get('MLFLOW_TRACKING_URI')}))\n"
    )
    env = cluster["env"] | {"MCLNF_DATA_URI": "submitter-side-value"}  # must not leak in
    proc = _submit(env, job["spec"]["entrypoint"], "--working-dir", str(stub.parents[1]))
    out = _result(proc)
    assert out["argv"] == _expected_argv(job["spec"]["entrypoint"])
    assert HEAD_ENV["MCLNF_DATA_URI"] in out["argv"]
    assert out["mlflow"] == HEAD_ENV["MLFLOW_TRACKING_URI"]


def _expected_argv(entrypoint: str) -> list[str]:
    """The pipeline's argv when the head's shell expands the entrypoint with HEAD_ENV."""
    bash, dash_c, script = shlex.split(entrypoint)
    assert (bash, dash_c) == ("bash", "-c")
    for key, value in HEAD_ENV.items():
        script = script.replace(f'"${key}"', shlex.quote(value))
    words = shlex.split(script)
    return words[words.index("pipelines/city_nerf.py") + 1 :]


def test_job_submit_without_token_is_refused(cluster):
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(cluster["dir"])  # no ~/.ray/auth_token to fall back on
    proc = _submit(env, "echo should-not-run")
    assert proc.returncode != 0
    assert "should-not-run" not in proc.stdout
    assert "AuthenticationError" in proc.stdout + proc.stderr or "Unauthorized" in (
        proc.stdout + proc.stderr
    )
