"""``mclnf render``: render a saved city model along any camera path, to PNGs and an MP4.

    mclnf render --model outputs/city --cameras orbit --frames 48 --scale 0.5

The model is read from the latest completed run of a city job's work folder, or from the run
or ``city_model/`` folder named (one ``<name>.pt`` per model, the block partition). Cameras:
``held-out`` (the scene's test views), ``orbit``, ``fly-over``, or a transforms.json-style file
of posed cameras. Every pixel goes through the routed modules (each sample point to its block's
module), in chunks, with a progress bar.
"""

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from mclnf_dist.city.model import PREVIEW_PREFIX, load_city_model
from mclnf_dist.config import PositiveFloat, PositiveInt, check_config, describe, parse_config
from mclnf_dist.device import Device, pick_device
from mclnf_dist.errors import MclnfError
from mclnf_dist.nerf.render import to_uint8
from mclnf_dist.preflight import check_writable
from mclnf_dist.progress import ProgressLog
from mclnf_dist.runs import city_model_folder
from mclnf_dist.scenes.camera_paths import flyover_frames, orbit_frames, scaled
from mclnf_dist.scenes.scene import Frame, Scene, load_scene, reading_once
from mclnf_dist.storage import write_png

PATHS = ("held-out", "orbit", "fly-over")


@dataclass
class RenderConfig:
    """What to render, along which cameras, at which size, to where."""

    model: str = "outputs/city"
    """A city job's work folder (its latest completed run), a run folder, or a run's
    ``city_model`` folder; only completed runs are read."""
    name: str = ""
    """Which model of the folder (``blocks-meta``, ``blocks-random``, ``mod``, ...); empty: the
    first of ``blocks-meta``, ``blocks-random``, or any."""
    cameras: str = "held-out"
    """``held-out``, ``orbit``, ``fly-over``, or a transforms.json-style file of cameras."""
    frames: PositiveInt = 48
    """Cameras of an orbit or a fly-over."""
    scale: PositiveFloat = 1.0
    """Resolution relative to the scene's cameras (0.5: half width and height)."""
    out: str = "outputs/render"
    """Folder of the PNGs and ``video.mp4``."""
    fps: PositiveInt = 24
    """Frames per second of the MP4."""
    chunk: PositiveInt = 4096
    """Rays per rendering call (bounds memory)."""
    device: Device = "auto"
    """Where to render: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""


@reading_once()
def main(argv: list[str]) -> None:
    """Entry point of ``mclnf render``."""
    render(parse_config(RenderConfig, argv, description=__doc__))


def pick_model(folder: Path, name: str) -> str:
    names = sorted(
        p.stem for p in folder.glob("*.pt") if not p.stem.startswith(("theta0-", PREVIEW_PREFIX))
    )
    if not names:
        raise MclnfError(f"{folder}: no saved city model (expected <name>.pt files of a city run)")
    if name:
        if name not in names:
            raise MclnfError(f"{folder}: no model {name!r} (expected one of {', '.join(names)})")
        return name
    return next((n for n in ("blocks-meta", "blocks-random") if n in names), names[0])


def camera_path(cfg: RenderConfig, scene: Scene) -> list[Frame]:
    if cfg.cameras == "held-out":
        frames = scene.frames
    elif cfg.cameras == "orbit":
        frames = orbit_frames(scene, cfg.frames)
    elif cfg.cameras == "fly-over":
        frames = flyover_frames(scene, cfg.frames)
    elif Path(cfg.cameras).is_file():
        frames = load_scene(cfg.cameras, "all").frames
    else:
        raise MclnfError(
            f"--cameras {cfg.cameras!r}: expected {', '.join(PATHS)} or an existing cameras file"
        )
    return [scaled(frame, cfg.scale) for frame in frames]


def render(cfg: RenderConfig) -> list[Path]:
    """Render every camera of the path; returns the PNG paths (and writes ``video.mp4``)."""
    check_config(cfg)  # a config built in code skips the command line's checks
    check_writable(cfg.out, "--out")  # before the model is read and anything is rendered
    folder = city_model_folder(cfg.model)
    name = pick_model(folder, cfg.name)
    model = load_city_model(str(folder), name)
    device = pick_device(cfg.device)
    model = model._replace(params={k: v.to(device) for k, v in model.params.items()})
    if not model.scene:
        raise MclnfError(f"{folder}/{name}.pt records no scene (expected a model of a city run)")
    split = "test" if cfg.cameras == "held-out" else "all"
    scene = load_scene(model.scene["root"], split, **model.scene["options"])
    frames = camera_path(cfg, scene)
    print(describe(cfg), flush=True)
    log = ProgressLog("render")
    log.info(f"{name} of {folder}: {len(frames)} {cfg.cameras} cameras")
    bar = log.bar("rendering", sum(f.width * f.height for f in frames), "ray")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    for index, frame in enumerate(frames):
        pixels = to_uint8(model.render(frame, scene.near, scene.far, cfg.chunk, bar.update))
        paths.append(Path(write_png(out / f"{index:04d}.png", pixels)))
        images.append(pixels)
    bar.close()
    video = write_mp4(images, out / "video.mp4", cfg.fps)
    log.info(f"wrote {len(paths)} PNGs and {video}")
    return paths


def write_mp4(images: list[np.ndarray], path: Path, fps: int) -> Path:
    """H.264 MP4 of the frames (resized to the first one's size, cropped to even sizes, as
    yuv420p needs)."""
    size = images[0].shape[1], images[0].shape[0]
    images = [
        i if i.shape[:2] == size[::-1] else np.asarray(Image.fromarray(i).resize(size))
        for i in images
    ]
    height, width = (s - s % 2 for s in images[0].shape[:2])
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = max(width, 2), max(height, 2), "yuv420p"
        for image in images:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image[:height, :width]), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.replace(path)
    return path
