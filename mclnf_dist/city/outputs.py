"""What the city job leaves behind: rendered novel views, the saved city model, JSON and plots."""

import dataclasses
import json
from pathlib import Path

import numpy as np

from mclnf_dist.city.data import CityData
from mclnf_dist.city.model import load_city_model, save_city_model
from mclnf_dist.city.results import BlockPhaseResult, CityRunReport
from mclnf_dist.config import json_ready, to_dict
from mclnf_dist.device import machine_info
from mclnf_dist.distributed.block_episodes import MetaOverlap
from mclnf_dist.evaluation.city_images import spread_views
from mclnf_dist.evaluation.plots import plot_psnr_curves
from mclnf_dist.evaluation.protocol import MethodResult
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.nerf.render import to_uint8
from mclnf_dist.progress import ProgressLog
from mclnf_dist.scenes.camera_paths import flyover_frames
from mclnf_dist.scenes.demo_city import CityConfig, render_frame
from mclnf_dist.scenes.scene import Scene, load_frame_image
from mclnf_dist.storage import write_atomic


def render_and_save(
    cfg,
    results: list[MethodResult],
    field_cfg: RadianceFieldConfig,
    city: CityData,
    scene: Scene,
    out: Path,
    log: ProgressLog,
) -> Path | None:
    """Save every method's city model; render held-out views and a fly-through of the whole city
    through the routed modules of the model read back from disk (``novel_views.png``,
    ``flythrough.png``), so the saved model is exactly what the pictures show."""

    chosen = spread_views(city.load_scene("test"), max(1, cfg.render_views)).frames
    path_frames = flyover_frames(scene, FLYTHROUGH_FRAMES)
    views = [[to_uint8(load_frame_image(scene, f)) for f in chosen]]
    names = ["truth"]
    # an invented path has ground truth only in the generated demo city
    flight_truth = truth_of_demo_city(city.scene_root, path_frames)
    flight = [] if flight_truth is None else [flight_truth]
    flight_names = names[: len(flight)]
    rendered = [r for r in results if r.final_params is not None]
    bar = log.bar("rendering", len(rendered) * (len(chosen) + len(path_frames)), "view")
    for result in rendered:
        modules = next(iter(result.final_params.values())).shape[0]
        modular = modules > 1 or len(city.block_order) == 1
        folder = str(out / "city_model")
        saved_field = field_cfg  # a parameter-matched network is wider, or has larger tables
        if field_cfg.kind == "mlp":
            width = result.final_params["w0"].shape[-1]
            saved_field = dataclasses.replace(
                field_cfg, mlp=dataclasses.replace(field_cfg.mlp, width=width)
            )
        else:
            size = result.final_params["hash_tables"].shape[2]
            grid = dataclasses.replace(field_cfg.grid.grid, log2_table_size=size.bit_length() - 1)
            saved_field = dataclasses.replace(
                field_cfg, grid=dataclasses.replace(field_cfg.grid, grid=grid)
            )
        save_city_model(
            folder,
            result.method,
            saved_field,
            result.final_params,
            city.partition,
            city.block_order,
            modular,
            scene_record(city),
        )
        model = load_city_model(folder, result.method)
        for row, shown in ((views, chosen), (flight, path_frames)):
            images = []
            for frame in shown:
                images.append(to_uint8(model.render(frame, scene.near, scene.far)))
                bar.update()
            row.append(images)
        names.append(result.method)
        flight_names.append(result.method)
    bar.close()
    path = out / "novel_views.png"
    save_grid(views, names, path)
    save_grid(flight, flight_names, out / "flythrough.png")
    log.info(
        f"rendered {len(chosen)} held-out views and a {len(path_frames)}-frame fly-through "
        f"x {len(names) - 1} methods -> {path}, {out / 'flythrough.png'}"
    )
    return path


FLYTHROUGH_FRAMES = 6


def truth_of_demo_city(scene_root: str, frames: list) -> list[np.ndarray] | None:
    """What ``frames`` really see, when the scene is the generated demo city; else None."""

    try:
        meta = json.loads((Path(scene_root) / "transforms.json").read_text())
    except (OSError, ValueError):
        return None
    generator = meta.get("generator") or {}
    if generator.get("name") != "mclnf_dist.scenes.city":
        return None
    city_cfg = CityConfig(**generator["config"])
    same_size = all(f.width == city_cfg.width and f.height == city_cfg.height for f in frames)
    return [render_frame(city_cfg, f.c2w) for f in frames] if same_size else None


def save_grid(rows: list[list[np.ndarray]], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(rows[0])
    fig, axes = plt.subplots(len(rows), cols, figsize=(2 * cols, 2 * len(rows)), squeeze=False)
    for r, (images, name) in enumerate(zip(rows, names, strict=True)):
        for c, image in enumerate(images):
            axes[r][c].imshow(image)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_city_outputs(
    cfg,
    results: list[MethodResult],
    city: CityData,
    out: Path,
    blocks: BlockPhaseResult | None = None,
    leakage: MetaOverlap | None = None,
) -> CityRunReport:
    """results.json (all methods, held-out-block numbers, the block phase) and PSNR plots.

    ``leakage``: :func:`~mclnf_dist.distributed.block_episodes.meta_training_overlap` of the
    meta-training streams; its ``overlap_fraction`` (0 when no meta-training ray reaches a
    held-out block) is a top-level field, the rest goes under ``meta_training_rays``.
    """

    last = cfg.adapt.max_steps
    held = {
        r.method: {
            "psnr_step1": held_out_psnr(r, city, 1),
            f"psnr_step{last}": held_out_psnr(r, city, last),
            "forgetting": r.forgetting,
            "params": r.params_per_signal,
        }
        for r in results
    }
    report = CityRunReport(
        machine=machine_info(),
        config=cfg_dict(cfg),
        blocks={
            "order": city.block_order,
            "meta_trained": city.meta_blocks,
            "held_out": city.held_out,
        },
        held_out_blocks=held,
        results=[r.summary() for r in results],
        block_training=blocks.to_json() if blocks else None,
    )
    if leakage is not None:
        report["overlap_fraction"] = leakage.overlap_fraction
        report["meta_training_rays"] = leakage.to_json()
    write_atomic(out / "results.json", json.dumps(report, indent=1))
    plot_psnr_curves(results, out / "psnr_curves.png", "city: held-out views, all blocks")
    return report


def cfg_dict(cfg) -> dict:

    return json_ready(to_dict(cfg))


def held_out_psnr(result: MethodResult, city: CityData, step: int) -> float | None:
    """Mean PSNR over the blocks never meta-trained on, at ``step``."""
    positions = [city.block_order.index(b) for b in city.held_out]
    curve = result.segment_curve.get(step)
    if not positions or curve is None:
        return None
    return sum(curve[p] for p in positions) / len(positions)


def scene_record(city: CityData) -> dict:
    """Where the city's scene is and how it was read (downscale, hold-out, box), so a saved city
    model can read it again the same way (``mclnf render``)."""
    options = dict(city.scene_options)
    if options.get("scene_box") is not None:
        options["scene_box"] = [[float(v) for v in corner] for corner in options["scene_box"]]
    return {"root": city.scene_root, "options": options}
