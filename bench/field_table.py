"""The block-field table: held-out full-image PSNR/SSIM of a scene's city model after minutes
and after steps of block training, per field and init.

One block-training run per (field, init) and block of ``--steps-budget`` steps (the
learning-rate schedule decays over that budget, as a user's run of that length), snapshots of
the module at every step mark (``--at-steps``) and every time mark (``--at-minutes``, training
time only: the snapshot's own time is not counted). A city of B blocks trains its blocks one
after the other, each alone on the machine; its time mark T is T/B of every block's training
(the block phase's compute split evenly), its step mark S is S steps of every block. After
training, every snapshot's city model (the blocks' modules stacked, routed as the city job
routes them) is rendered on all held-out views and scored as the city job scores its model
(:func:`~mclnf_dist.evaluation.city_images.score_city_images`), with every pixel assigned to
the block of its ray's midpoint (the same pixels for every model). Prints ONE JSON line:

    rows   [{field, init, mark ("256 steps" / "2 min"), step, seconds, psnr, ssim,
             never_meta_trained_psnr (per block never meta-trained on)}, ...]

Scenes: a capture (``--scene DIR``: the ``scene-quick`` recipe's data, one block) or
``demo-city`` (the city job's generated 3x2 demo city; meta-trained on blocks 0-3). Fields are
the recipe's field with ``kind`` set (``hash_grid``: the recipe's grid field and sampling;
for ``scene-quick`` contracted, a proposal network's 32 samples placing 16, or a cut-out
object's box and 32 stratified samples; ``mlp``: today's
4x64 ReLU+PE field in the box, 32 stratified samples), then any ``--set KEY=VALUE`` (e.g.
``contraction=false``, ``grid.proposal.samples=0``, ``num_samples=32``), each at its own Adam
rate (``--lr-mlp``, ``--lr-grid``). Inits: ``random`` (seeded), or ``meta`` from a completed
run's ``theta_0`` for the same field (``--meta-init-mlp``, ``--meta-init-hash-grid``:
``theta0-mse.pt`` of a ``city_model`` folder).

    python bench/field_table.py --scene ../shared/scenes/fox --downscale 4 \\
        --fields mlp,hash_grid --at-minutes 2,5 --at-steps 256,1000 --steps-budget 4000
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from mclnf_dist.city.data import city_field, field_for_capture  # noqa: E402
from mclnf_dist.config import merge  # noqa: E402
from mclnf_dist.device import pick_device  # noqa: E402
from mclnf_dist.distributed.block_training import BlockTask, train_block  # noqa: E402
from mclnf_dist.evaluation.city_images import (  # noqa: E402
    ray_midpoint_blocks,
    score_city_images,
    spread_views,
)
from mclnf_dist.experiments.recipes import city_demo, scene_quick  # noqa: E402
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params  # noqa: E402
from mclnf_dist.progress import ProgressLog  # noqa: E402
from mclnf_dist.runtime import ensure_ray  # noqa: E402
from mclnf_dist.scenes.routing import module_router  # noqa: E402
from mclnf_dist.scenes.scene import check_scene, scene_options  # noqa: E402
from mclnf_dist.sweeps.space import nest  # noqa: E402


def marks(text: str, kind: type) -> list:
    return sorted(kind(v) for v in text.split(",") if v.strip())


def field_settings(pairs: list[str]) -> dict:
    """``["grid.grid.levels=8", ...]`` -> the nested mapping :func:`merge` applies."""
    flat = {
        key.strip(): yaml.safe_load(value) for key, _, value in (p.partition("=") for p in pairs)
    }
    return nest(flat)


def row_field(recipe_field: RadianceFieldConfig, kind: str, settings: list[str]):
    """The field of a row: the recipe's with ``kind`` set (a grid keeps the recipe's sampling;
    the MLP, which has no proposal network, is today's: the box, 32 stratified samples), then
    ``--set``'s settings."""
    if kind == "mlp":
        field = dataclasses.replace(recipe_field, kind=kind, contraction=False, num_samples=32)
    else:
        field = dataclasses.replace(recipe_field, kind=kind)
    return merge(field, field_settings(settings), "--set")


class MarksReached(Exception):
    """Raised from the step callback once every mark is taken (the run's schedule unchanged)."""


def train_with_snapshots(
    task: BlockTask, device, at_steps: list[int], at_seconds: list[tuple[str, float]]
) -> dict[str, tuple[int, float, dict]]:
    """Run ``task``; return {mark: (step, seconds, params)} for every mark it reaches: the step
    marks (``"256 steps"``) and the time marks (``(label, seconds of this task's training)``).
    The run stops early once every mark is taken (its learning-rate schedule is still the
    budget's)."""
    snapshots: dict[str, tuple[int, float, dict]] = {}
    pending = list(at_seconds)

    def on_step(step: int, params: dict, seconds: float) -> None:
        keep = [f"{step} steps"] if step in at_steps else []
        while pending and seconds >= pending[0][1]:
            keep.append(pending.pop(0)[0])
        for mark in keep:
            copy = {k: v.detach().cpu().clone() for k, v in params.items()}
            snapshots[mark] = (step, seconds, copy)
        if not pending and step >= max(at_steps, default=0):
            raise MarksReached

    try:
        train_block(task, device, on_step=on_step)
    except MarksReached:
        pass
    return snapshots


def train_city_with_snapshots(
    tasks: list[BlockTask], device, at_steps: list[int], at_minutes: list[float]
) -> dict[str, tuple[float, float, dict]]:
    """Every block's task in turn (each alone on the machine); a time mark of T minutes is T/B
    minutes of each of the B blocks (the city's block-training compute split evenly). Returns
    {mark: (mean step over blocks, total seconds, the city's stacked params)} for the marks
    every block reached."""
    share = [(f"{m:g} min", 60.0 * m / len(tasks)) for m in at_minutes]
    per_block = [train_with_snapshots(task, device, at_steps, share) for task in tasks]
    city = {}
    for mark in per_block[0]:
        if all(mark in snaps for snaps in per_block):
            taken = [snaps[mark] for snaps in per_block]
            params = {k: torch.cat([t[2][k] for t in taken]) for k in taken[0][2]}
            step = sum(t[0] for t in taken) / len(taken)
            city[mark] = (step, sum(t[1] for t in taken), params)
    return city


def plot_rows(rows: list[dict], path: str) -> None:
    """Held-out PSNR against training seconds, one line per (field, init), steps annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label in dict.fromkeys(f"{r['field']}, {r['init']}" for r in rows):
        mine = sorted((r for r in rows if f"{r['field']}, {r['init']}" == label),
                      key=lambda r: r["seconds"])  # fmt: skip
        ax.plot([r["seconds"] for r in mine], [r["psnr"] for r in mine], marker="o", label=label)
        for r in mine:
            ax.annotate(str(r["step"]), (r["seconds"], r["psnr"]), fontsize=7,
                        textcoords="offset points", xytext=(3, -9))  # fmt: skip
    ax.set_xlabel("block-training seconds (2 CPUs); numbers: steps")
    ax.set_ylabel("PSNR (dB), held-out full images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scene",
        default="../shared/scenes/fox",
        help="a capture's folder, or demo-city: the generated demo city",
    )
    parser.add_argument("--downscale", type=int, default=4)
    parser.add_argument("--fields", default="mlp,hash_grid")
    parser.add_argument("--inits", default="random", help="random and/or meta")
    parser.add_argument("--meta-init-mlp", help="the MLP's theta_0 file for --inits meta")
    parser.add_argument("--meta-init-hash-grid", help="the grid's theta_0 file, --inits meta")
    parser.add_argument("--at-minutes", default="2,5,10,20")
    parser.add_argument("--at-steps", default="256,1000,4000")
    parser.add_argument("--steps-budget", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument(
        "--score-train-views",
        type=int,
        default=0,
        help="also score this many training views, spread over the capture (the fit, not a test)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field setting, e.g. grid.grid.levels=8 (YAML value; repeatable)",
    )
    parser.add_argument("--lr-mlp", type=float, default=5e-3)
    parser.add_argument("--lr-grid", type=float, default=2e-2, help="scene-quick's rate")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot", help="also draw PSNR against seconds into this PNG")
    parser.add_argument("--plot-from", help="only draw --plot from this bench's JSON output")
    parser.add_argument("--workdir", help="where the scene's ray store goes (default: temporary)")
    args = parser.parse_args()
    if args.plot_from:
        with open(args.plot_from) as handle:
            plot_rows(json.load(handle)["rows"], args.plot)
        return
    import ray

    from mclnf_dist.city.data import prepare_city
    from mclnf_dist.city.init_asset import KIND as INIT_KIND
    from mclnf_dist.state import load_state

    device = pick_device(args.device)
    log = ProgressLog("bench")
    work = args.workdir or tempfile.mkdtemp(prefix="field-table-")
    if args.scene == "demo-city":
        recipe = city_demo()
    else:
        recipe = scene_quick()
        recipe.data.scene, recipe.data.downscale = args.scene, args.downscale
        recipe.data.skip_missing_images = True
    recipe.data.work_dir = os.path.join(work, "scene")
    started = time.perf_counter()
    capture = (
        None
        if args.scene == "demo-city"
        else check_scene(recipe.data.scene, **scene_options(recipe.data))
    )
    cities = {}

    def prepared(field: RadianceFieldConfig):
        """The scene's ray stores for ``field``: clipped to its box (a ``--set scene_box``, or
        the scene's), or whole for a contracted field; each made once."""
        key = (field.contraction, str(field.scene_box))
        if key not in cities:
            ensure_ray()
            try:
                cities[key] = prepare_city(
                    recipe.data, log, field.scene_box, unbounded=field.contraction
                )
            finally:
                ray.shutdown()
        return cities[key]

    at_steps = marks(args.at_steps, int)
    rows = []
    for kind in args.fields.split(","):
        field = field_for_capture(row_field(recipe.field, kind, args.set), capture)
        city = prepared(field)
        test_scene = city.load_scene("test")
        if args.score_train_views:
            train_views = spread_views(city.load_scene("train"), args.score_train_views)
        router = module_router(city.partition, city.block_order, modular=True)
        # never meta-trained on, where meta vs random is judged: the demo city's held-out
        # blocks; a capture's every block (its theta_0 comes from elsewhere, e.g. the demo city)
        judged = city.non_meta_blocks if args.scene == "demo-city" else city.block_order
        field = city_field(field, city.load_scene("all"))
        pixel_blocks = ray_midpoint_blocks(field, city.partition, test_scene)
        lr = args.lr_grid if kind == "hash_grid" else args.lr_mlp
        block = dataclasses.replace(recipe.block, steps=args.steps_budget, lr=lr,
                                    batch_rays=args.batch, checkpoint_every=10**9,
                                    curve_points=0)  # fmt: skip
        for init_name in args.inits.split(","):
            if init_name == "meta":
                init = load_state(getattr(args, f"meta_init_{kind}"), INIT_KIND)["theta0"]
            else:
                init = init_radiance_params(field, 1, torch.Generator().manual_seed(0))
            with tempfile.TemporaryDirectory() as root:
                tasks = [BlockTask(b, init_name, init, field, city.train_uri, city.test_uri,
                                   block, root, seed=0) for b in city.block_order]  # fmt: skip
                snapshots = train_city_with_snapshots(
                    tasks, device, at_steps, marks(args.at_minutes, float)
                )
            for mark, (step, seconds, params) in snapshots.items():
                scores = score_city_images(field, params, router, city.partition, test_scene,
                                           None, mark, fixed_blocks=pixel_blocks)  # fmt: skip
                never = [scores.per_block[b] for b in judged if b in scores.per_block]
                seen = {}
                if args.score_train_views:  # how well the training views are fitted
                    seen["train_views_psnr"] = round(
                        score_city_images(
                            field, params, router, city.partition, train_views, None, mark
                        ).psnr,
                        2,
                    )
                rows.append({"field": kind, "init": init_name, "mark": mark,
                             "contraction": field.contraction,
                             "proposal_samples": field.grid.proposal.samples
                             if field.uses_proposal else 0,
                             "samples": field.num_samples,
                             "step": round(step), "seconds": round(seconds, 1),
                             "psnr": round(scores.psnr, 2), "ssim": round(scores.ssim, 3),
                             "never_meta_trained_psnr": [round(v, 2) for v in never],
                             **seen})  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {
        "bench": "field_table",
        "machine": machine(),
        "scene": args.scene,
        "downscale": args.downscale,
        "batch": args.batch,
        "steps_budget": args.steps_budget,
        "field_settings": args.set,
        "held_out_views": len(test_scene.frames),
        "blocks": city.block_order,
        "never_meta_trained_blocks": judged,
        "rows": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    if args.plot:
        plot_rows(rows, args.plot)


if __name__ == "__main__":
    main()
