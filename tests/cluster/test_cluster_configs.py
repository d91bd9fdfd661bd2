"""Cluster configs checked offline against the real tools' own rules.

- ray_cluster.yaml: Ray 2.60's cluster-config JSON schema, `prepare_config` (merges Ray's AWS
  defaults) + `validate_config` (what `ray up` runs before touching the cloud), broken copies that
  must fail, the start commands' shell syntax and `ray start` flags (parsed by Ray's own CLI), and
  Ray's AWS bootstrap + node launch against moto's EC2/IAM on 127.0.0.1 (no cloud access here).
- cluster/kuberay-rayjob.yaml: the fields KubeRay requires, versions, references between objects.
- cluster/Dockerfile: pins consistent with pyproject.toml.
"""

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config, with_head_node_ip

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
RAYJOB_YAML = ROOT / "cluster" / "kuberay-rayjob.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def _pin(name: str) -> str:
    """The exact version pyproject.toml pins for a dependency."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==([\w.+-]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"{name} is not pinned with == in pyproject.toml")


@pytest.fixture(scope="module")
def raw_config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw_config):
    config = prepare_config(copy.deepcopy(raw_config))
    validate_config(config)
    return config


# ---------------------------------------------------------------- ray_cluster.yaml


def test_cluster_yaml_matches_rays_json_schema(raw_config):
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(raw_config, schema)


def test_cluster_yaml_prepares_and_validates_like_ray_up(prepared):
    nodes = prepared["available_node_types"]
    head = nodes[prepared["head_node_type"]]
    gpu_types = [n for n in nodes.values() if n["resources"].get("GPU", 0) >= 1]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    assert gpu_types, "a GPU worker type"
    for node in gpu_types:
        assert 0 <= node["min_workers"] <= node["max_workers"] <= prepared["max_workers"]
        assert node["node_config"]["InstanceType"].startswith(("g", "p"))
        assert node["node_config"]["IamInstanceProfile"], "S3 access for workers"
    assert prepared["provider"]["type"] == "aws"
    # prepare_config merged the common setup commands into both node kinds
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install -e /home/ubuntu/mclnf-dist" in c for c in prepared[key])
    assert any("torch.cuda.is_available()" in c for c in prepared["worker_setup_commands"])


BROKEN = {
    "unknown top-level key": lambda c: c.update(setup_command=["echo typo"]),
    "GPU count as a string": lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(
        GPU="1"
    ),
    "node type without node_config": lambda c: c["available_node_types"]["gpu_worker"].pop(
        "node_config"
    ),
    "no provider": lambda c: c.pop("provider"),
    "head type not defined": lambda c: c.update(head_node_type="gpu_head"),
    "min_workers above max_workers": lambda c: c["available_node_types"]["gpu_worker"].update(
        min_workers=20
    ),
}


@pytest.mark.parametrize("breakage", BROKEN, ids=list(BROKEN))
def test_broken_copies_fail_validation(raw_config, breakage):
    broken = copy.deepcopy(raw_config)
    BROKEN[breakage](broken)
    schema = json.loads(RAY_SCHEMA.read_text())
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        jsonschema.validate(broken, schema)  # the schema alone catches most
        validate_config(prepare_config(broken))  # and what `ray up` runs catches the rest


def _ray_start_args(command: str) -> list[str]:
    words = shlex.split(command)
    i = words.index("start", words.index("ray"))
    return words[i + 1 :]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic, from ray.scripts' imports
def test_start_commands_are_valid_shell_and_valid_ray_start_flags(prepared):
    from ray.scripts.scripts import start

    commands = {
        "head": prepared["head_start_ray_commands"],
        # what the launcher runs on workers: RAY_HEAD_IP exported in front
        "worker": with_head_node_ip(prepared["worker_start_ray_commands"], "10.0.0.1"),
    }
    for cmds in commands.values():
        for cmd in cmds + prepared["setup_commands"]:
            subprocess.run(["bash", "-n", "-c", cmd], check=True)
        (start_cmd,) = [c for c in cmds if "ray start" in c]
        assert "RAY_AUTH_MODE=token" in start_cmd, "Ray 2.60 token auth on every node"
        assert "cluster/cluster.env" in start_cmd, "MLFLOW_TRACKING_URI etc. for raylets/jobs"
        # Ray's own click parser accepts every flag (raises on unknown/ill-typed ones)
        args = _ray_start_args(start_cmd.replace("$RAY_HEAD_IP", "10.0.0.1"))
        start.make_context("start", args)
    with pytest.raises(Exception):  # noqa: B017 - click's UsageError/NoSuchOption
        start.make_context("start", ["--head", "--no-such-flag"])


def test_env_file_and_mounts_exist_and_pins_match(raw_config):
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "cluster" / "cluster.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert env["MLFLOW_TRACKING_URI"].startswith("http")
    assert env["MCLNF_DATA_URI"].startswith("s3://")
    assert env["MCLNF_STORAGE_URI"].startswith("s3://")
    mounts = raw_config["file_mounts"]
    # relative to the repo root, where `ray up` runs
    assert mounts["/home/ubuntu/mclnf-dist"] == "."
    assert (ROOT / "pyproject.toml").exists()
    assert mounts["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert any(f'"torch=={_pin("torch")}"' in c for c in raw_config["setup_commands"])


BOOTSTRAP_SCRIPT = r"""
import copy, json, os, sys
import boto3, botocore.exceptions, yaml
from moto.server import ThreadedMotoServer

port = int(sys.argv[2])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-west-2")
try:
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.util import prepare_config, validate_config
    from ray.autoscaler.tags import (NODE_KIND_HEAD, NODE_KIND_WORKER, TAG_RAY_NODE_KIND,
                                     TAG_RAY_NODE_NAME, TAG_RAY_USER_NODE_TYPE)

    # The one-time account setup the README asks for: the instance profiles exist already
    # (then Ray does not create them and skips its 2x15 s IAM propagation sleeps).
    iam = boto3.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    for name in ("ray-autoscaler-v1", "mclnf-s3-rw"):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

    config = prepare_config(yaml.safe_load(open(sys.argv[1])))
    validate_config(config)
    boot = bootstrap_aws(config)
    provider = AWSNodeProvider(boot["provider"], boot["cluster_name"])
    kinds = {boot["head_node_type"]: NODE_KIND_HEAD}
    for name in boot["available_node_types"]:
        node_config = copy.deepcopy(boot["available_node_types"][name]["node_config"])
        if name == boot["head_node_type"]:
            node_config.update(boot["head_node"])  # the head's IAM profile, as `ray up` does
        tags = {TAG_RAY_NODE_KIND: kinds.get(name, NODE_KIND_WORKER),
                TAG_RAY_USER_NODE_TYPE: name, TAG_RAY_NODE_NAME: name}
        provider.create_node(node_config, tags, 1)

    # node_config is free-form in Ray's schema; a misspelled EC2 field only fails at launch
    bad = copy.deepcopy(boot["available_node_types"]["gpu_worker"]["node_config"])
    bad["InstanceTyp"] = bad.pop("InstanceType")
    try:
        provider.create_node(bad, {TAG_RAY_NODE_KIND: NODE_KIND_WORKER}, 1)
        bad_error = None
    except Exception as e:  # botocore's ParamValidationError (possibly wrapped)
        bad_error = f"{type(e).__name__}: {e}"

    instances = []
    for res in boto3.client("ec2").describe_instances()["Reservations"]:
        for inst in res["Instances"]:
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            instances.append({
                "type": tags.get("ray-user-node-type"), "instance": inst["InstanceType"],
                "profile": inst.get("IamInstanceProfile", {}).get("Arn", ""),
                "lifecycle": inst.get("InstanceLifecycle", "on-demand"),
                "key": inst.get("KeyName"), "sg": [g["GroupId"] for g in inst["SecurityGroups"]],
            })
    print("RESULT " + json.dumps({"instances": instances, "bad_error": bad_error,
                                  "key_file": boot["auth"]["ssh_private_key"]}))
finally:
    server.stop()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_aws_bootstrap_and_launch_against_loopback_ec2(tmp_path):
    """Ray's AWS bootstrap (IAM, key pair, subnets, security group) and node launch, run against
    moto's EC2/IAM server on 127.0.0.1: catches node_config errors the schema cannot see."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)  # the launcher writes its SSH key to ~/.ssh
    out = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP_SCRIPT, str(CLUSTER_YAML), str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    by_type = {i["type"]: i for i in result["instances"]}
    assert by_type["head"]["instance"] == "m5.2xlarge"
    assert by_type["head"]["profile"].endswith("instance-profile/ray-autoscaler-v1")
    assert by_type["gpu_worker"]["instance"] == "g5.xlarge"
    assert by_type["gpu_worker"]["profile"].endswith("instance-profile/mclnf-s3-rw")
    assert by_type["gpu_worker"]["lifecycle"] == "spot"
    assert by_type["head"]["sg"] == by_type["gpu_worker"]["sg"]  # one intra-cluster group
    assert by_type["head"]["key"] == by_type["gpu_worker"]["key"]
    assert Path(result["key_file"]).is_relative_to(tmp_path)
    assert result["bad_error"] and "InstanceTyp" in result["bad_error"]


# ---------------------------------------------------------------- KubeRay + Dockerfile

QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)  # Kubernetes resource.Quantity, as in KubeRay's CRD


@pytest.fixture(scope="module")
def manifests():
    docs = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _rayjob(manifests):
    (job,) = [d for (kind, _), d in manifests.items() if kind == "RayJob"]
    return job


def test_rayjob_has_the_fields_kuberay_requires(manifests):
    job = _rayjob(manifests)
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert "pipelines/city_nerf.py" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__ == _pin("ray")
    assert cluster["authOptions"]["mode"] == "token"  # Ray >= 2.52 token auth via KubeRay
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers[0]["image"]
    ports = {p["name"]: p["containerPort"] for p in head_containers[0]["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
    groups = cluster["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    gpus = 0
    for group in groups:
        assert isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == head_containers[0]["image"], "one image for all pods"
        limits = container["resources"]["limits"]
        gpus += int(limits.get("nvidia.com/gpu", 0))
        for section in ("requests", "limits"):
            for value in container["resources"][section].values():
                assert QUANTITY.match(str(value)), value
    assert gpus >= 1, "a GPU worker group with nvidia.com/gpu limits"


def test_rayjob_env_and_references_resolve(manifests):
    """Every $VAR of the entrypoint and MLFLOW_TRACKING_URI come from a ConfigMap defined in the
    same file; the service account exists; the image is the one cluster/Dockerfile builds."""
    job = _rayjob(manifests)
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    needed = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", job["spec"]["entrypoint"]))
    needed.add("MLFLOW_TRACKING_URI")
    for template in templates:
        pod = template["spec"]
        assert ("ServiceAccount", pod["serviceAccountName"]) in manifests
        (container,) = pod["containers"]
        provided = set()
        for source in container["envFrom"]:
            if "configMapRef" in source:
                cm = manifests[("ConfigMap", source["configMapRef"]["name"])]
                provided |= set(cm["data"])
            else:
                assert source["secretRef"].get("optional") is True
        assert needed <= provided, needed - provided
    cm = manifests[("ConfigMap", "mclnf-config")]["data"]
    assert cm["MCLNF_DATA_URI"].startswith("s3://") and cm["MCLNF_STORAGE_URI"].startswith("s3://")
    assert "cluster/Dockerfile" in RAYJOB_YAML.read_text()


def test_rayjob_entrypoint_flags_exist_in_the_city_pipeline(manifests):
    """The entrypoint's flags parse with the pipeline's own CLI (catches drift between the two)."""
    from mclnf_dist.config import parse_config
    from mclnf_dist.jobs.city import CityExperimentConfig

    _, _, script = shlex.split(_rayjob(manifests)["spec"]["entrypoint"])
    words = shlex.split(
        script.replace('"$MCLNF_DATA_URI"', "s3://b/city").replace(
            '"$MCLNF_STORAGE_URI"', "s3://b/runs"
        )
    )
    assert "$" not in " ".join(words)
    argv = words[words.index("pipelines/city_nerf.py") + 1 :]
    cfg = parse_config(CityExperimentConfig, argv)
    assert cfg.data.data_uri == "s3://b/city" and cfg.storage_uri == "s3://b/runs"
    assert cfg.train.use_gpu and cfg.train.num_workers >= 1


def test_dockerfile_builds_the_pinned_project_on_cuda():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG CUDA_BASE=(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:")
    assert re.search(r"^FROM \$\{CUDA_BASE\}", text, re.M)
    assert f'"torch=={_pin("torch")}"' in text
    assert re.search(r"^RUN pip install -e \.", text, re.M)
    assert re.search(r"^WORKDIR /app$", text, re.M)  # the RayJob's relative entrypoint path
    assert "wget" in text and "bash" in text  # KubeRay's exec probes use them
    ignore = (ROOT / "cluster" / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


# ---------------------------------------------------------------- what the cluster files install


def _shell_commands() -> list[tuple[str, str]]:
    """``(where, command)`` of every shell command the cluster files run on a node or image."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    found = [
        (f"ray_cluster.yaml {key}", command)
        for key, value in config.items()
        if key.endswith("_commands")
        for command in value or []
    ]
    dockerfile = DOCKERFILE.read_text().replace("\\\n", " ")
    found += [("cluster/Dockerfile", m) for m in re.findall(r"^RUN (.+)$", dockerfile, re.M)]
    return found


PIPED_INTO_SHELL = re.compile(r"\|\s*(sudo\s+)?(\S*/)?(sh|bash|zsh|dash|python3?)\b")


def _unpinned_requirements(command: str) -> list[str]:
    """Requirements of each ``pip install`` in ``command`` that are neither ``name==version``
    nor the project itself (a local path)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:  # simple commands, split at && || ; | ( )
        if set(token) <= set("&|;()"):
            parts.append([])
        else:
            parts[-1].append(token)
    bad = []
    for words in parts:
        if "pip" not in " ".join(words[:4]) or "install" not in words:
            continue
        args = words[words.index("install") + 1 :]
        skip_value = {"--index-url", "--extra-index-url", "-i", "-r", "-c", "--find-links"}
        previous = ""
        for arg in args:
            if previous in skip_value or arg.startswith("-"):
                previous = arg
                continue
            local = arg.startswith((".", "/", "~")) or previous == "-e"
            if not local and not re.fullmatch(r"[\w.\-]+(\[[\w,\-]+\])?==[\w.+\-]+", arg):
                bad.append(arg)
            previous = arg
    return bad


def test_cluster_files_pipe_nothing_into_a_shell_and_pin_every_install():
    commands = _shell_commands()
    assert len(commands) > 5  # the parsing found the setup and RUN commands
    piped = [(where, c) for where, c in commands if PIPED_INTO_SHELL.search(c)]
    assert piped == []
    installs = [(where, c) for where, c in commands if re.search(r"pip3? install", c)]
    assert {w.split()[0] for w, _ in installs} == {"ray_cluster.yaml", "cluster/Dockerfile"}
    unpinned = [(where, _unpinned_requirements(c)) for where, c in installs]
    assert [u for u in unpinned if u[1]] == []
    assert _unpinned_requirements('pip install "uv" torch==2.13.0 -e .') == ["uv"]  # the rule
    for text in (CLUSTER_YAML.read_text(), DOCKERFILE.read_text()):
        assert "install.sh" not in text and '"uv==' in text
