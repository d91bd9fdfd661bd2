"""Blended block seams on the generated demo city: held-out PSNR near the block boundary with and
without blending.

A 2x1-block city (small images) is generated, partitioned from its cameras as ingest does (overlap
0.15), and two modules are trained *independently*, Mega-NeRF style: module b sees only the rays
that cross block b (with the overlap margin) and renders them alone. The held-out views are then
rendered through the routed city model with hard routing (``seam_margin=0``) and with blending
(``seam_margin`` up to ``2 * overlap``, the band the two modules share training data in), and
scored on: all pixels, pixels whose ray has a sample in the blend band, and pixels whose surface
(the expected termination point of the hard render) lies in the band. The seam visibility is the
mean absolute colour jump between horizontally neighbouring pixels whose surfaces lie on either
side of the boundary.

    python bench/seams.py --steps 600        # prints a JSON line (a few minutes on 2 CPUs)
"""

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mclnf_dist.fields.stacked_mlp import FieldConfig  # noqa: E402
from mclnf_dist.nerf.field import field_for_scene, init_radiance_params, pack_rays  # noqa: E402
from mclnf_dist.nerf.rays import frame_rays, near_far_from_box  # noqa: E402
from mclnf_dist.nerf.render import render_view_outputs  # noqa: E402
from mclnf_dist.scenes.demo_city import CityConfig, make_city  # noqa: E402
from mclnf_dist.scenes.partition import BlockPartition  # noqa: E402
from mclnf_dist.scenes.routing import module_router  # noqa: E402
from mclnf_dist.scenes.scene import load_frame_image, load_scene  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2)))


def scene_rays(cfg, scene):
    """All pixels of a scene's frames: (N, 8) packed rays, (N, 3) rgb."""
    rays, rgbs = [], []
    for frame in scene.frames:
        origins, directions = frame_rays(frame)
        near, far, _ = near_far_from_box(origins, directions, *cfg.box, min_near=scene.near)
        far = far.clamp_max(scene.far)
        rays.append(pack_rays(origins, directions, torch.minimum(near, far), far))
        rgbs.append(torch.as_tensor(load_frame_image(scene, frame) / 255.0, dtype=torch.float32))
    return torch.cat(rays).float(), torch.cat([r.reshape(-1, 3) for r in rgbs])


def train_blocks(cfg, partition, rays, rgb, steps, batch, seed):
    """Two modules, each trained on the rays of its own block (with overlap) alone."""
    member = partition.ray_blocks(rays[:, :3].numpy(), rays[:, 3:6].numpy(), rays[:, 6].numpy(),
                                  rays[:, 7].numpy())  # fmt: skip
    pools = [torch.as_tensor(np.flatnonzero(member[:, b])) for b in range(partition.num_blocks)]
    generator = torch.Generator().manual_seed(seed)
    params = init_radiance_params(cfg, partition.num_blocks, generator)
    params = {k: v.requires_grad_() for k, v in params.items()}
    optimiser = torch.optim.Adam(params.values(), lr=2e-3)
    for _ in range(steps):
        picks = [pool[torch.randint(len(pool), (batch,), generator=generator)] for pool in pools]
        x = torch.stack([rays[p] for p in picks])  # (M, batch, 8)
        target = torch.stack([rgb[p] for p in picks])
        inputs, aux = cfg.mlp_inputs(x, params)
        loss = ((cfg.outputs(cfg.network(params, inputs), aux) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return {k: v.detach() for k, v in params.items()}, [len(p) for p in pools], float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aerial", type=int, default=12, help="aerial views per block")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    city = CityConfig(blocks_x=2, blocks_y=1, width=args.size, height=args.size,
                      aerial_views_per_block=args.aerial, street_views_per_block=4)  # fmt: skip
    root = make_city(tempfile.mkdtemp(prefix="seam_city_"), city)
    train, every = load_scene(root, "train"), load_scene(root, "all")
    heldout = [f for s in ("val", "test") for f in load_scene(root, s).frames]
    partition = BlockPartition.from_cameras(every.camera_centers(), 2, 1, overlap=0.15)
    mlp = FieldConfig(kind="relu_pe", depth=4, width=64, pe_frequencies=8, output_offset=0.0)
    cfg = field_for_scene(train, mlp=mlp, num_samples=32)
    rays, rgb = scene_rays(cfg, train)
    t0 = time.perf_counter()
    params, pool_sizes, loss = train_blocks(cfg, partition, rays, rgb, args.steps, args.batch,
                                            args.seed)  # fmt: skip
    train_seconds = time.perf_counter() - t0
    router = module_router(partition, [0, 1], modular=True)
    spacing = partition.block_spacing
    widest = max(args.margins)
    masks: dict[str, list[np.ndarray]] = {"surface_in_band": [], "ray_through_band": []}
    across: list[np.ndarray] = []  # neighbouring pixels whose surfaces lie in different blocks
    results: dict = {}
    truth_jumps: list[np.ndarray] = []
    for margin in [0.0, *args.margins]:
        field = replace(cfg, seam_margin=margin)
        preds, truths, jumps = [], [], []
        for index, frame in enumerate(heldout):
            out = render_view_outputs(field, params, frame, router, train.near, train.far)
            image = out["rgb"].numpy()
            preds.append(image.reshape(-1, 3))
            truth = load_frame_image(train, frame) / 255.0
            truths.append(truth.reshape(-1, 3))
            if margin == 0.0:  # masks from the hard render and the widest band
                solid = out["opacity"].numpy() > 0.5
                points = out["points"].numpy().reshape(-1, 3)
                _, weights = partition.blend_points(points, widest)
                in_band = (weights[:, 1:] > 0).any(axis=1) & solid.reshape(-1)
                masks["surface_in_band"].append(in_band)
                origins, directions = frame_rays(frame)
                near, far, _ = near_far_from_box(origins, directions, *cfg.box, min_near=train.near)
                far = far.clamp_max(train.far)
                depth = near[:, None] + torch.linspace(0, 1, 64) * (far - near)[:, None]
                samples = origins[:, None] + depth[..., None] * directions[:, None]
                _, sample_w = partition.blend_points(samples.reshape(-1, 3).numpy(), widest)
                through = (sample_w[:, 1:] > 0).any(axis=1).reshape(-1, 64).any(axis=1)
                masks["ray_through_band"].append(through)
                side = partition.route_points(points).reshape(frame.height, frame.width)
                across.append((side[:, 1:] != side[:, :-1]) & solid[:, 1:] & solid[:, :-1])
            step = np.abs(image[:, 1:] - image[:, :-1]).mean(axis=-1)
            jumps.append(step[across[index]])
            if margin == 0.0:
                truth_step = np.abs(truth[:, 1:] - truth[:, :-1]).mean(axis=-1)
                truth_jumps.append(truth_step[across[index]])
        pred, truth = np.concatenate(preds), np.concatenate(truths)
        scores = {"psnr_all": psnr(pred, truth)}
        for name, parts in masks.items():
            mask = np.concatenate(parts)
            scores[f"psnr_{name}"] = psnr(pred[mask], truth[mask])
        scores["seam_jump"] = float(np.concatenate(jumps).mean())
        results["hard" if margin == 0.0 else f"blend_{margin:g}"] = scores
    results["ground_truth_seam_jump"] = float(np.concatenate(truth_jumps).mean())
    counts = {name: int(np.concatenate(parts).sum()) for name, parts in masks.items()}
    counts |= {"all": int(len(pred)), "across_pairs": int(sum(a.sum() for a in across))}
    print(json.dumps({
        "city": f"2x1 blocks, {args.size}x{args.size} images, {len(train.frames)} train / "
                f"{len(heldout)} held-out views",
        "field": "relu_pe 4x64, 32 samples", "steps": args.steps, "batch_per_block": args.batch,
        "block_rays": pool_sizes, "final_loss": loss, "train_seconds": round(train_seconds, 1),
        "block_spacing": spacing, "overlap_margin": partition.margin, "pixels": counts,
        "results": results, "seconds": round(time.perf_counter() - started, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
