"""Hash-grid field throughput (forward + backward points/s) and the gather strategies compared.

- ``field``: :func:`~mclnf_dist.fields.grid_field.grid_field_evaluate` (encoding, density and
  colour MLPs) forward + backward of a loss, instant-ngp's default grid (16 levels x 2^19 x 2,
  resolutions 16..2048), ``M`` = 1 and 4 modules of ``N`` = 65536 points each (``M=4``: in
  module chunks, ``M=4_one_call``: one stacked call); CUDA when present.
- ``gather``: only the table lookup and trilinear blend of the encoding (indices precomputed, M=1),
  forward + backward, for the alternatives we measured:
  ``embedding_bag_index_add`` (ours: fused gather and weighted sum, ``index_add`` backward),
  the same with point-major instead of level-major indices (cache locality),
  ``index_select_bmm`` and ``index_select_mul_sum`` (autograd backward), and
  ``per_level_index_select`` (one gather per level's table, autograd backward).

On a shared 2-core machine OpenMP's spinning worker threads lose their cores to other processes
and a step ran 3-10x slower (measured: the 200-step test fit took 61 s instead of 5 s), so the
benchmark asks for passive waiting unless the caller set ``OMP_WAIT_POLICY`` (before torch loads).

    python bench/hash_grid.py            # prints one JSON line (about 30 s on 2 CPUs)
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compare, machine  # noqa: E402

from mclnf_dist.fields.grid_field import (  # noqa: E402
    GridFieldConfig,
    grid_field_evaluate,
    grid_field_forward,
    init_grid_params,
)
from mclnf_dist.fields.hash_grid import (  # noqa: E402
    CORNERS,
    GatherBlend,
    HashGridConfig,
    corner_indices_and_weights,
    init_hash_tables,
)


def field_step(cfg: GridFieldConfig, modules: int, points: int, device: str, one_call: bool):
    gen = torch.Generator().manual_seed(0)
    params = {k: v.requires_grad_() for k, v in init_grid_params(cfg, modules, gen, device).items()}
    x = torch.rand(modules, points, 3, generator=gen).to(device)
    dirs = torch.nn.functional.normalize(torch.randn(modules, points, 3, generator=gen), dim=-1)
    dirs = dirs.to(device)

    def step() -> None:
        for p in params.values():
            p.grad = None
        evaluate = grid_field_forward if one_call else grid_field_evaluate
        density, rgb = evaluate(cfg, params, x, dirs)
        (density.mean() + rgb.square().mean()).backward()

    return step


def gather_variants(grid: HashGridConfig, points: int) -> dict:
    tables = init_hash_tables(grid, 1).requires_grad_()
    x = torch.rand(1, points, 3, generator=torch.Generator().manual_seed(1))
    index, weight = corner_indices_and_weights(grid, x, num_tables=1)  # (1, L, N, 8)
    index, weight = index.reshape(-1, CORNERS), weight.reshape(-1, CORNERS)
    point_major_index = index.view(grid.levels, points, CORNERS).transpose(0, 1).reshape(-1, 8)
    point_major_weight = weight.view(grid.levels, points, CORNERS).transpose(0, 1).reshape(-1, 8)
    features = grid.features_per_level
    rows = tables.view(-1, features)

    def select_bmm() -> torch.Tensor:
        gathered = rows.index_select(0, index.view(-1)).view(-1, CORNERS, features)
        return torch.bmm(weight[:, None, :], gathered)

    def select_mul_sum() -> torch.Tensor:
        gathered = rows.index_select(0, index.view(-1)).view(-1, CORNERS, features)
        return (gathered * weight[..., None]).sum(1)

    per_level_index = index.view(grid.levels, -1) - (
        torch.arange(grid.levels)[:, None] * grid.table_size
    )
    per_level_weight = weight.view(grid.levels, -1, CORNERS)

    def per_level() -> torch.Tensor:
        out = []
        for level in range(grid.levels):
            gathered = tables[0, level].index_select(0, per_level_index[level])
            gathered = gathered.view(-1, CORNERS, features)
            out.append(torch.bmm(per_level_weight[level][:, None, :], gathered))
        return torch.cat(out)

    variants = {
        "embedding_bag_index_add": lambda: GatherBlend.apply(tables, index, weight),
        "embedding_bag_index_add_point_major": lambda: GatherBlend.apply(
            tables, point_major_index, point_major_weight
        ),
        "index_select_bmm": select_bmm,
        "index_select_mul_sum": select_mul_sum,
        "per_level_index_select": per_level,
    }

    def with_backward(fn):
        def step() -> None:
            tables.grad = None
            fn().square().sum().backward()

        return step

    return {name: with_backward(fn) for name, fn in variants.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=65536, help="points per module")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions (median)")
    args = parser.parse_args()
    cfg = GridFieldConfig()  # instant-ngp's grid, 64-wide MLPs, SH degree 4
    started = time.perf_counter()
    result: dict = {"bench": "hash_grid", "machine": machine(), "points_per_module": args.points}
    result["omp_wait_policy"] = os.environ["OMP_WAIT_POLICY"]
    result["grid"] = {
        "levels": cfg.grid.levels,
        "log2_table_size": cfg.grid.log2_table_size,
        "features_per_level": cfg.grid.features_per_level,
        "resolutions": [cfg.grid.base_resolution, cfg.grid.finest_resolution],
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        steps = {
            "M=1": field_step(cfg, 1, args.points, device, one_call=True),
            "M=4": field_step(cfg, 4, args.points, device, one_call=False),
            "M=4_one_call": field_step(cfg, 4, args.points, device, one_call=True),
        }
        seconds = compare(steps, reps=args.reps, warmup=1)
        result[f"field_fwd_bwd_points_per_s_{device}"] = {
            name: round(int(name[2]) * args.points / s) for name, s in seconds.items()
        }
    gather_points = args.points // 2
    seconds = compare(gather_variants(cfg.grid, gather_points), reps=args.reps, warmup=1)
    result[f"gather_fwd_bwd_points_per_s_cpu_M=1_N={gather_points}"] = {
        name: round(gather_points / s) for name, s in seconds.items()
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
