"""``mclnf view``: the viewer camera's convention, recorded paths that ``mclnf render`` renders, and
the viewer opened in a real headless Chromium that receives rendered frames."""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mclnf_dist.cli import main as mclnf
from mclnf_dist.jobs.view import CityViewer, ViewConfig, camera_frame, frame_wxyz
from mclnf_dist.nerf.rays import frame_rays
from mclnf_dist.scenes.camera_paths import look_at

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_viewer_camera_is_the_frame_it_renders():
    c2w = look_at(np.array([3.0, -2.0, 1.5]), np.array([0.0, 0.5, 0.2]))
    frame = camera_frame(c2w[:3, 3], frame_wxyz(c2w), fov=0.8, aspect=1.5, width=60, time_=0.0)
    np.testing.assert_allclose(frame.c2w, c2w, atol=1e-9)
    assert (frame.width, frame.height) == (60, 40)
    assert frame.fy == pytest.approx(20 / np.tan(0.4))  # vertical field of view 0.8 rad
    _, directions = frame_rays(frame)
    centre = directions[20 * 60 + 30].double().numpy()  # the middle pixel looks at the target
    target = np.array([0.0, 0.5, 0.2]) - c2w[:3, 3]
    assert np.dot(centre, target / np.linalg.norm(target)) > 0.999


def test_a_recorded_path_renders_with_mclnf_render(model, tmp_path):
    cfg = ViewConfig(model=str(model), port=free_port(), paths=str(tmp_path / "paths"))
    viewer = CityViewer(cfg)
    try:
        assert viewer.server.get_host() == "127.0.0.1"  # loopback unless another is asked for
        with socket.socket() as probe:  # and nothing answers on another interface
            probe.settimeout(1.0)
            others = [a for a in socket.gethostbyname_ex(socket.gethostname())[2]
                      if not a.startswith("127.")]  # fmt: skip
            if others:
                assert probe.connect_ex((others[0], cfg.port)) != 0
        centre = viewer.scene.camera_centers().mean(axis=0)
        for eye in (centre + [5.0, 0, 3], centre + [0, 5.0, 3]):
            c2w = look_at(eye, centre)
            viewer.recorded.append(camera_frame(eye, frame_wxyz(c2w), 0.9, 4 / 3, 16, 0.0))
        path = viewer.save_path()
    finally:
        viewer.stop()
    out = tmp_path / "render"
    mclnf(["render", "--model", str(model), "--cameras", str(path), "--out", str(out)])
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (16, 12)
    assert not np.array_equal(np.asarray(Image.open(pngs[0])), np.asarray(Image.open(pngs[1])))


class DevTools:
    """A headless Chromium driven through the DevTools protocol (one page)."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one names a dead port
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
             "--enable-unsafe-swiftshader", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        page = next(t for t in targets if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=2**26)
        self.calls = 0

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.calls:
                return reply.get("result", {})

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def close(self) -> None:
        self.socket.close()
        self.process.kill()
        self.process.wait()


def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(
    not any(shutil.which(b) for b in BROWSERS),
    reason="no Chromium on this machine (.ci/run installs the system package)",
)
def test_a_headless_browser_receives_rendered_frames_and_a_moved_camera_changes_them(
    model, tmp_path
):
    binary = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    cfg = ViewConfig(model=str(model), port=free_port(), widths=(64, 128), rest_s=0.1)
    viewer = CityViewer(cfg)
    browser = DevTools(binary, tmp_path / "profile")
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=640, height=480,
                     deviceScaleFactor=1, mobile=False)  # fmt: skip
        browser.call("Page.navigate", url=f"http://127.0.0.1:{cfg.port}")
        assert wait_for(lambda: sum(viewer.frames_sent.values()) >= 2), "no frame rendered"
        time.sleep(1.0)  # the browser draws the last image it received
        first = browser.screenshot()
        assert first.std() > 5 and len(np.unique(first.reshape(-1, 3), axis=0)) > 50  # not blank
        (client,) = viewer.server.get_clients().values()
        sent = viewer.frames_sent[client.client_id]
        before = viewer.last_image[client.client_id]
        client.camera.position = np.asarray(client.camera.position) + [4.0, -3.0, 2.0]
        viewer.refresh_all()
        assert wait_for(lambda: viewer.frames_sent[client.client_id] >= sent + 2)
        time.sleep(1.0)
        second = browser.screenshot()
        assert not np.array_equal(viewer.last_image[client.client_id], before)
        changed = np.abs(second.astype(int) - first.astype(int)).sum(axis=2) > 0
        assert changed.mean() > 0.2  # the page shows the new frame (a random model: subtle)
        Image.fromarray(second).save(os.environ.get("MCLNF_VIEW_SHOT", tmp_path / "view.png"))
    finally:
        browser.close()
        viewer.stop()


def test_a_time_sliced_city_gets_a_time_slider_that_renders_its_slices(tmp_path):
    import torch

    from mclnf_dist.city.model import save_city_model
    from mclnf_dist.nerf.field import field_for_scene, init_radiance_params
    from mclnf_dist.runs import COMPLETE
    from mclnf_dist.scenes.demo_city import CityConfig, make_city
    from mclnf_dist.scenes.partition import BlockPartition
    from mclnf_dist.scenes.scene import load_scene

    scene_root = make_city(str(tmp_path / "scene"), CityConfig(width=16, height=12))
    scene = load_scene(scene_root, "all")
    times = np.linspace(0.0, 1.0, len(scene.frames))
    partition = BlockPartition.from_cameras(scene.camera_centers(), 1, 1, times=times,
                                            time_slices=2)  # fmt: skip
    field = field_for_scene(scene, density_bias=5.0)  # opaque: each module shows its colours
    params = init_radiance_params(field, 2, torch.Generator().manual_seed(0))
    run = tmp_path / "runs" / "city-demo" / "20260101-000000-abcd"
    save_city_model(str(run / "city_model"), "blocks-meta", field, params, partition, [0, 1],
                    True, {"root": scene_root, "options": {}})  # fmt: skip
    (run / COMPLETE).write_text("{}")
    viewer = CityViewer(ViewConfig(model=str(run), port=free_port()))
    try:
        assert viewer.time_slider is not None
        camera = type("Camera", (), {})()
        centre = viewer.scene.camera_centers().mean(axis=0)
        c2w = look_at(centre + [0.0, -3.0, 2.0], centre)
        camera.position, camera.wxyz, camera.fov, camera.aspect = (
            c2w[:3, 3],
            frame_wxyz(c2w),
            1.0,
            1.0,
        )
        early = viewer.render(camera, 24)
        viewer.time_slider.value = 0.9  # the second time slice: the other module
        assert wait_for(lambda: viewer.time == pytest.approx(0.9), 5)
        assert not np.array_equal(viewer.render(camera, 24), early)
    finally:
        viewer.stop()
