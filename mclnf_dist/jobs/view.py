"""``mclnf view MODEL``: a saved city model in the browser (viser), rendered through its routed
modules from wherever the camera is.

    mclnf view outputs/city                 # then open http://127.0.0.1:8080
    mclnf view runs/city-demo/<id> --host 0.0.0.0 --port 8081

Each browser gets its own render loop: a small image as soon as the camera moves, then sharper ones
while it rests (progressive refinement), so a CPU keeps up. The blocks' boxes and the training
cameras are drawn; a time slider appears for a time-sliced city; "record view" adds the current
camera to a path and "save path" writes it as a cameras file for ``mclnf render --cameras``.
``--watch`` on a run still training shows its blocks as their checkpoints land (the run's
``preview-<init>`` model: every module at the init until its block's checkpoint replaces it), then
its final model; on a work folder, each newer completed run. The server binds to 127.0.0.1 unless
another interface is asked for.
"""

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mclnf_dist.cameras.frame import OPENCV_TO_OPENGL, Frame
from mclnf_dist.city.model import (
    PREVIEW_PREFIX,
    CityModel,
    checkpoints_stamp,
    load_city_model,
    preview_checkpoints,
    watched_params,
)
from mclnf_dist.config import (
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    check_config,
    parse_config,
)
from mclnf_dist.device import Device, pick_device
from mclnf_dist.errors import MclnfError
from mclnf_dist.jobs.render import pick_model
from mclnf_dist.nerf.render import to_uint8
from mclnf_dist.progress import ProgressLog
from mclnf_dist.runs import COMPLETE, city_model_folder
from mclnf_dist.scenes.partition import ground_axes, load_partition
from mclnf_dist.scenes.scene import Scene, load_scene, reading_once
from mclnf_dist.storage import write_atomic


@dataclass
class ViewConfig:
    """Which model, where the viewer listens, how it renders."""

    model: str = "outputs/city"
    """A city job's work folder (its latest completed run), a run folder, or a run's
    ``city_model`` folder."""
    name: str = ""
    """Which model of the folder; empty: ``blocks-meta``, else ``blocks-random``, else any."""
    host: str = "127.0.0.1"
    """Interface to bind (``0.0.0.0``: every interface, reachable from other machines)."""
    port: PositiveInt = 8080
    widths: tuple[PositiveInt, ...] = (96, 192, 384)
    """Image widths rendered in turn while the camera rests (the first as soon as it moves)."""
    rest_s: NonNegativeFloat = 0.2
    """How long the camera must rest before the next, sharper image."""
    chunk: PositiveInt = 8192
    """Rays per rendering call."""
    watch: bool = False
    """Follow ``model`` (polled every ``watch_s``): a run still training shows its blocks as
    their checkpoints land, then its final model; a work folder, its newest completed run."""
    watch_s: PositiveFloat = 5.0
    paths: str = "outputs/view"
    """Folder the saved camera paths go to."""
    device: Device = "auto"


def camera_frame(
    position: np.ndarray, wxyz: np.ndarray, fov: float, aspect: float, width: int, time_: float
) -> Frame:
    """The viewer camera as a :class:`Frame`: viser gives the camera-to-world rotation in the
    OpenCV convention (+z forward, -y up) and the vertical field of view."""
    from viser.transforms import SO3

    c2w = np.eye(4)
    c2w[:3, :3] = SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix() @ OPENCV_TO_OPENGL
    c2w[:3, 3] = position
    height = max(1, round(width / aspect))
    focal = 0.5 * height / np.tan(0.5 * fov)
    return Frame("", c2w, focal, focal, width / 2, height / 2, width, height, time_)


def frame_wxyz(c2w: np.ndarray) -> np.ndarray:
    """The (w, x, y, z) quaternion of a camera-to-world's rotation in viser's convention."""
    from viser.transforms import SO3

    return SO3.from_matrix(c2w[:3, :3] @ OPENCV_TO_OPENGL).wxyz


class CityViewer:
    """The viser server, the model and one render loop per connected browser."""

    def __init__(self, cfg: ViewConfig, log: ProgressLog | None = None) -> None:
        import viser

        self.cfg, self.log = cfg, log or ProgressLog("view")
        self.device = pick_device(cfg.device)
        self.lock = threading.Lock()
        self.model, self.scene, self.stamp = self.load()
        self.time = 0.0
        self.recorded: list[Frame] = []
        self.time_slider: Any = None
        """The time slider of a time-sliced city (None: the city has one time)."""
        self.stopped = threading.Event()
        self.clients: dict[int, threading.Event] = {}
        """Per client id: set when its camera (or the time, or the model) changed."""
        self.loops: list[threading.Thread] = []
        self.frames_sent: dict[int, int] = {}
        """Per client id: images sent (what a test or a status line can read)."""
        self.last_image: dict[int, np.ndarray] = {}
        self.server = viser.ViserServer(host=cfg.host, port=cfg.port, verbose=False)
        self.draw_scene()
        self.add_controls()
        self.server.on_client_connect(self.connect)
        self.server.on_client_disconnect(lambda client: self.clients.pop(client.client_id, None))
        if cfg.watch:
            threading.Thread(target=self.watch, daemon=True).start()
        self.log.info(
            f"viewer of {self.model_file} at http://{cfg.host}:{self.server.get_port()} "
            f"({len(self.scene.frames)} training cameras, {len(self.model.block_order)} modules)"
        )

    def locate(self) -> tuple[Path, str, bool]:
        """(``city_model`` folder, model name, whether it is a preview). With ``--watch`` a run
        still training is read too: its preview, with the blocks trained so far."""
        path = Path(self.cfg.model)
        folder = path if path.name == "city_model" else path / "city_model"
        if self.cfg.watch and folder.is_dir() and not (folder.parent / COMPLETE).exists():
            init = self.cfg.name.removeprefix("blocks-") or "meta"
            previews = [f"{PREVIEW_PREFIX}{i}" for i in (init, "random")]
            name = next((n for n in previews if (folder / f"{n}.pt").exists()), None)
            if name is not None:
                return folder, name, True
        folder = city_model_folder(self.cfg.model)
        return folder, pick_model(folder, self.cfg.name), False

    def stamp_of(self, folder: Path, name: str, preview: bool) -> float:
        """When what the viewer shows last changed (a preview: its newest block checkpoint)."""
        path = folder / f"{name}.pt"
        stamp = path.stat().st_mtime
        if preview:
            if getattr(self, "model_file", None) == path:  # the preview shown: its root is known
                root = self.model.checkpoints
            else:
                root = preview_checkpoints(str(folder), name)
            stamp = max(stamp, checkpoints_stamp(root))
        return stamp

    def load(self) -> tuple[CityModel, Scene, float]:
        """The model ``locate`` names (a preview with its landed blocks), its scene's training
        cameras (read again only when the model names another scene) and its stamp."""
        folder, name, preview = self.locate()
        if preview:
            model, landed = watched_params(str(folder), name)
            self.log.info(f"{name}: {len(landed)} of {len(model.block_order)} blocks trained")
        else:
            model = load_city_model(str(folder), name)
        if not model.scene:
            raise MclnfError(f"{folder / name}.pt records no scene (expected a city run's model)")
        self.model_file, self.partition = folder / f"{name}.pt", load_partition(str(folder))
        stamp = self.model_file.stat().st_mtime
        if preview:
            stamp = max(stamp, checkpoints_stamp(model.checkpoints))
        previous = getattr(self, "model", None)
        model = model._replace(params={k: v.to(self.device) for k, v in model.params.items()})
        if previous is not None and previous.scene == model.scene:
            return model, self.scene, stamp
        scene = load_scene(model.scene["root"], "train", **model.scene["options"])
        return model, scene, stamp

    def draw_scene(self) -> None:
        """The blocks' boxes (ground cells x the scene box's height) and the training cameras."""
        scene, partition = self.scene, self.partition
        box = scene.scene_box if scene.scene_box is not None else np.array([[0.0] * 3, [1.0] * 3])
        ground = ground_axes(partition.up_axis)
        up = 3 - sum(ground)

        def point(a: float, b: float, level: int) -> np.ndarray:
            xyz = np.zeros(3)
            xyz[ground[0]], xyz[ground[1]], xyz[up] = a, b, box[level][up]
            return xyz

        segments = []
        for (a0, b0), (a1, b1) in partition.block_extents():
            corners = [point(a, b, level) for level in (0, 1) for a, b in
                       ((a0, b0), (a1, b0), (a1, b1), (a0, b1))]  # fmt: skip
            for i in range(4):
                segments += [(corners[i], corners[(i + 1) % 4]),
                             (corners[4 + i], corners[4 + (i + 1) % 4]),
                             (corners[i], corners[4 + i])]  # fmt: skip
        if segments:
            points = np.array(segments, dtype=np.float32)
            self.server.scene.add_line_segments("/blocks", points, colors=(255, 160, 0))
        extent = float(np.linalg.norm(np.ptp(scene.camera_centers(), axis=0))) or 1.0
        self.frustums = [
            self.server.scene.add_camera_frustum(
                f"/cameras/{index}",
                fov=2 * np.arctan(0.5 * frame.height / frame.fy),
                aspect=frame.width / frame.height,
                scale=0.02 * extent,
                thickness=1.5,
                thickness_units="screen",
                wxyz=frame_wxyz(frame.c2w),
                position=frame.c2w[:3, 3],
                color=(80, 160, 255),
            )
            for index, frame in enumerate(scene.frames)
        ]

    def add_controls(self) -> None:
        gui = self.server.gui
        if self.partition.time_slices > 1:
            t0, t1 = self.partition.time_range
            slider = gui.add_slider("time", min=t0, max=t1, step=(t1 - t0) / 100, initial_value=t0)
            self.time, self.time_slider = t0, slider

            @slider.on_update
            def _(_event: Any) -> None:
                self.time = float(slider.value)
                self.refresh_all()

        cameras = gui.add_checkbox("training cameras", initial_value=True)

        @cameras.on_update
        def _(_event: Any) -> None:
            for frustum in self.frustums:
                frustum.visible = cameras.value

        self.show_cameras = cameras
        record, save = gui.add_button("record view"), gui.add_button("save path")

        @record.on_click
        def _(event: Any) -> None:
            camera = event.client.camera
            frame = camera_frame(camera.position, camera.wxyz, camera.fov, camera.aspect,
                                 self.cfg.widths[-1], self.time)  # fmt: skip
            self.recorded.append(frame)
            event.client.add_notification("recorded", f"{len(self.recorded)} views in the path")

        @save.on_click
        def _(event: Any) -> None:
            path = self.save_path()
            event.client.add_notification("saved", f"mclnf render --cameras {path}")

    def save_path(self) -> Path:
        """The recorded views as a cameras file (``cameras_only``: no images) for ``mclnf
        render --cameras``; one file per save, numbered."""
        if not self.recorded:
            raise MclnfError("no recorded views (press 'record view' first)")
        folder = Path(self.cfg.paths)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"path-{len(list(folder.glob('path-*.json'))):03d}.json"
        frames = [
            {"file_path": f"view-{i:04d}", "transform_matrix": f.c2w.tolist(), "fl_x": f.fx,
             "fl_y": f.fy, "cx": f.cx, "cy": f.cy, "w": f.width, "h": f.height, "time": f.time}
            for i, f in enumerate(self.recorded)
        ]  # fmt: skip
        record = {"cameras_only": True, "near": self.scene.near, "far": self.scene.far}
        write_atomic(path, json.dumps(record | {"frames": frames}, indent=1))
        return path

    def connect(self, client: Any) -> None:
        changed = threading.Event()
        client.camera.on_update(lambda _camera: changed.set())
        self.clients[client.client_id] = changed
        loop = threading.Thread(target=self.render_loop, args=(client, changed), daemon=True)
        self.loops.append(loop)
        loop.start()
        changed.set()

    def refresh_all(self) -> None:
        for changed in list(self.clients.values()):
            changed.set()

    def render_loop(self, client: Any, changed: threading.Event) -> None:
        """Render the client's camera: the smallest width at once, then each sharper width after
        the camera rests ``rest_s``; a move starts over."""
        while not self.stopped.is_set() and client.client_id in self.clients:
            if not changed.wait(timeout=1.0):
                continue
            changed.clear()
            for level, width in enumerate(self.cfg.widths):
                if self.stopped.is_set() or (level and changed.wait(timeout=self.cfg.rest_s)):
                    break  # moved again: start over at the smallest width
                try:
                    image = self.render(client.camera, width)
                    client.scene.set_background_image(image, format="jpeg")
                except Exception as error:  # one line; the loop goes on
                    self.log.info(f"render failed: {error}")
                    break
                self.last_image[client.client_id] = image
                self.frames_sent[client.client_id] = self.frames_sent.get(client.client_id, 0) + 1

    def render(self, camera: Any, width: int) -> np.ndarray:
        frame = camera_frame(camera.position, camera.wxyz, camera.fov, camera.aspect, width,
                             self.time)  # fmt: skip
        with self.lock, torch.no_grad():
            pixels = self.model.render(frame, self.scene.near, self.scene.far, self.cfg.chunk)
        return to_uint8(pixels)

    def watch(self) -> None:
        """Reload when what the folder holds changes: a block checkpoint landing in a run still
        training, its final model, or a newer completed run."""
        while not self.stopped.wait(self.cfg.watch_s):
            try:
                stamp = self.stamp_of(*self.locate())
            except (MclnfError, OSError):
                continue
            if stamp > self.stamp:
                with self.lock:
                    self.model, self.scene, self.stamp = self.load()
                self.log.info(f"reloaded {self.model_file}")
                self.refresh_all()

    def stop(self) -> None:
        """Stop the render loops (joined: a loop left inside torch at exit aborts the process)
        and the server."""
        self.stopped.set()
        self.refresh_all()
        for loop in self.loops:
            loop.join(timeout=30)
        self.server.stop()


def main(argv: list[str]) -> None:
    """Entry point of ``mclnf view``: serve until Ctrl-C."""
    cfg = parse_config(ViewConfig, argv, description=__doc__)
    with reading_once():
        check_config(cfg)
        viewer = CityViewer(cfg)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        viewer.stop()
