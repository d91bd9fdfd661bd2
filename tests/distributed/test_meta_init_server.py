"""The meta-init server on a real local Ray: sync averaging, bounded staleness, restart."""

import time

import ray
import torch

from mclnf_dist.distributed.checkpoints import CheckpointStore
from mclnf_dist.distributed.meta_init_server import MetaInitServerImpl, start_meta_init_server


def theta():
    return {"w0": torch.zeros(1, 2, 2), "b0": torch.zeros(1, 1, 2)}


def grads(value):
    return {"w0": torch.full((1, 2, 2), value), "b0": torch.full((1, 1, 2), value)}


def test_sync_round_averages_all_ranks_once(tmp_path, ray_local):
    server = MetaInitServerImpl(theta(), 0.1, 100.0, str(tmp_path), num_workers=2, total_rounds=5)
    v, [ref] = server.publish()
    assert server.publish()[1][0] == ref  # one object per version, shared by every worker
    server.push(0, v, grads(1.0), {"outer_psnr": 10.0})
    server.push(0, v, grads(3.0), {"outer_psnr": 10.0})  # a retried push replaces, never doubles
    assert server.version == 0
    server.push(1, v, grads(-1.0), {"outer_psnr": 20.0})
    assert server.version == 1
    assert server.history[-1]["outer_psnr"] == 15.0
    # Adam's first step moves every weight by -lr * sign(mean grad) = -lr * sign(3 - 1)
    torch.testing.assert_close(server.params()["w0"], torch.full((1, 2, 2), -0.1))
    assert server.push(1, 0, grads(1.0), {"outer_psnr": 0.0}).accepted is False  # stale
    assert CheckpointStore(str(tmp_path)).versions()[-1] == 1


def test_async_mode_bounds_staleness(tmp_path, ray_local):
    server = MetaInitServerImpl(
        theta(), 0.1, 100.0, str(tmp_path), 2, 10, asynchronous=True, max_staleness=1
    )
    assert server.push(0, 0, grads(1.0), {}).accepted
    assert server.push(1, 0, grads(1.0), {}).accepted  # one version old: fine
    assert not server.push(1, 0, grads(1.0), {}).accepted  # two versions old: rejected
    assert server.version == 2


def test_actor_restart_restores_latest_checkpoint(tmp_path, ray_local):
    name = f"server-{time.time_ns()}"
    actor = start_meta_init_server(
        name,
        theta0=theta(),
        outer_lr=0.1,
        grad_clip=100.0,
        storage_uri=str(tmp_path),
        num_workers=1,
        total_rounds=5,
    )
    for round_ in range(3):
        ray.get(actor.push.remote(0, round_, grads(1.0), {"outer_psnr": float(round_)}))
    before = ray.get(actor.params.remote())
    ray.kill(actor, no_restart=False)  # the actor process dies; Ray restarts it
    status = ray.get(actor.status.remote())  # retried on the restarted actor
    assert status.version == 3
    torch.testing.assert_close(ray.get(actor.params.remote())["w0"], before["w0"])
    assert ray.get(actor.wait_for_version.remote(3, 5.0)) == 3


def test_a_large_theta0_survives_a_restart_before_the_first_checkpoint(tmp_path, ray_local):
    """A grid field's theta0 (megabytes) is not a constructor argument (Ray would keep it in the
    object store and warn, ray#53727): the server starts from its round-0 checkpoint, and so
    does the server restarted before any round."""
    name = f"server-{time.time_ns()}"
    large = {"w0": torch.randn(512, 1024)}  # 2 MB: not inlined into the creation task
    actor = start_meta_init_server(
        name, theta0=large, outer_lr=0.1, grad_clip=100.0, storage_uri=str(tmp_path),
        num_workers=1, total_rounds=5,
    )  # fmt: skip
    assert ray.get(actor.status.remote()).version == 0
    ray.kill(actor, no_restart=False)
    assert ray.get(actor.status.remote()).version == 0  # retried on the restarted actor
    torch.testing.assert_close(ray.get(actor.params.remote())["w0"], large["w0"])
    ray.kill(actor)
