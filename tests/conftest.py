"""Shared fixtures: real local services (Ray, an S3-protocol server on loopback, MLflow sqlite).

Nothing here is a mock: Ray is a real local cluster, S3 is moto's real HTTP server on 127.0.0.1,
MLflow is a real sqlite-backed tracking store in a temporary folder.
"""

import json
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# torch's OpenMP threads spin-wait by default; with Ray workers and job subprocesses sharing 2
# cores that made a 200-step learning test take 61-101 s instead of 5 s here. Set before torch
# loads (in this process and every process the tests start).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start_and_kill_when(
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    ready: Callable[[], bool],
    timeout: float,
) -> bool:
    """Run ``cmd`` in the repository root (output to ``log``) and SIGKILL it once ``ready()``
    holds or ``timeout`` passes; True if it was still running when killed (an injected crash,
    not a run that had already ended)."""
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                if ready():
                    break
                time.sleep(0.2)
            running = process.poll() is None
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    return running


@pytest.fixture
def kill_when():
    """:func:`start_and_kill_when` (tests run with importlib imports: no conftest imports)."""
    return start_and_kill_when


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A real local Ray with 2 CPUs, shared by the whole test session.

    Started after the loopback S3 server's endpoint and credentials are exported, so its workers
    inherit them the way a cluster's nodes have theirs (credentials never travel in a Ray
    ``runtime_env``: see ``mclnf_dist/runtime.py``).
    """
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto) on 127.0.0.1 with fake credentials; yields its endpoint.

    ``AWS_ENDPOINT_URL`` and fake credentials are exported, so s3fs/fsspec ``s3://`` URIs reach it.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the loopback S3 server; yields ``s3://<bucket>``."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{free_port()}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def mlflow_uri(tmp_path):
    """A real MLflow tracking store: sqlite in a temporary folder."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


FOX = Path("/work/shared/scenes/fox")


@pytest.fixture(scope="session")
def fox_scene(tmp_path_factory) -> Path:
    """The real fox capture (instant-ngp, ../shared/scenes/fox) as a scene that loads: its
    transforms.json lists 67 frames, but 17 of their images are not in the copy we have (the
    loader rightly refuses it: frame 4, images/0005.jpg); this keeps the 50 frames with images
    (images linked, not copied), everything else in the file unchanged."""
    if not FOX.is_dir():
        pytest.skip("the fox scene is not in ../shared/scenes/fox")
    root = tmp_path_factory.mktemp("fox")
    meta = json.loads((FOX / "transforms.json").read_text())
    meta["frames"] = [f for f in meta["frames"] if (FOX / f["file_path"]).is_file()]
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    (root / "images").symlink_to(FOX / "images")
    return root


def _look_at(eye) -> list[list[float]]:
    """Camera-to-world of a camera at ``eye`` looking at the origin, z up (OpenGL axes)."""
    eye = np.asarray(eye, dtype=np.float64)
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    c2w[:3, 3] = eye
    return c2w.tolist()


def blender_scene(root: Path, views: dict[str, int], size: int = 16) -> Path:
    """Per-split files only, RGBA images without extension in ``file_path``, camera_angle_x."""
    index = 0
    for split, count in views.items():
        frames = []
        for _ in range(count):
            angle = 2 * math.pi * index / sum(views.values())
            eye = [4 * math.cos(angle), 4 * math.sin(angle), 1.5 + 0.5 * math.sin(3 * angle)]
            pixels = np.zeros((size, size, 4), dtype=np.uint8)
            pixels[size // 4 : -size // 4, size // 4 : -size // 4] = [200, 40, 10 * index, 255]
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "RGBA").save(root / split / f"r_{index}.png")
            frames.append({"file_path": f"./{split}/r_{index}", "transform_matrix": _look_at(eye)})
            index += 1
        meta = {"camera_angle_x": 0.69, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def blender_scene_factory():
    """``blender_scene(root, {"train": 5, "test": 3}, size=16) -> root``: a Blender-format object
    scene (per-split files only, RGBA, ``file_path`` without extension, no box, no near/far)."""
    return blender_scene


def meta_training_pixel_leaks(report: dict, train_uri: str, avoid: bool = True) -> tuple[int, int]:
    """(rays drawn, rays drawn whose (image, pixel) is also stored in a held-out block) over the
    first rounds of every meta block's episode stream, seeded as the city job's Train workers
    seed them (``report``: a city ``results.json``). Independent of the streams' geometric filter:
    it only compares pixel ids with what ingest stored in the held-out blocks. ``avoid=False``:
    the same streams without the filter (they must leak, or the check could see nothing)."""
    from mclnf_dist.distributed.block_episodes import episode_stream, worker_seed
    from mclnf_dist.raystore.stream import read_block_rays

    held_out, meta = report["blocks"]["held_out"], report["blocks"]["meta_trained"]
    train = report["config"]["train"]
    stored = set()
    for block in held_out:
        ids = read_block_rays(train_uri, block, ["image_id", "pixel"])
        stored |= set(zip(ids["image_id"].tolist(), ids["pixel"].tolist(), strict=True))
    drawn = leaks = 0
    for index, block in enumerate(meta):
        seed = worker_seed(report["config"]["run"]["seed"], index % train["num_workers"])
        avoided = held_out if avoid else []
        stream = episode_stream(
            train_uri, block, avoided, train["rays_per_task"], seed, ("image_id", "pixel")
        )
        for _ in range(min(report["config"]["meta"]["outer_steps"], 8)):
            batch = next(stream)
            ids = zip(batch["image_id"].tolist(), batch["pixel"].tolist(), strict=True)
            drawn += len(batch["pixel"])
            leaks += sum(pair in stored for pair in ids)
    return drawn, leaks


@pytest.fixture(scope="session")
def pixel_leaks():
    """:func:`meta_training_pixel_leaks`: an independent check that meta-training never drew a
    pixel that ingest stored in a held-out block."""
    return meta_training_pixel_leaks
