"""COLMAP sparse models read by the one scene loader: poses in its convention (checked against
COLMAP's own projection), every supported lens, several cameras, the points' box, bad models."""

import numpy as np
import pycolmap
import pytest
from PIL import Image

from mclnf_dist.errors import MclnfError
from mclnf_dist.nerf.rays import frame_rays
from mclnf_dist.scenes.colmap_model import up_rotation
from mclnf_dist.scenes.scene import load_scene


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def write_model(root, cameras, images, points=(), ext: str = "bin") -> None:
    """``cameras``: (model, width, height, params); ``images``: (name, camera index, R, t) with
    ``cam_from_world`` x -> R x + t; an image file of the camera's size is written for each."""
    reconstruction = pycolmap.Reconstruction()
    for camera_id, (model, width, height, params) in enumerate(cameras, start=1):
        camera = pycolmap.Camera.create_from_model_name(camera_id, model, 1.0, width, height)
        camera.params = params
        reconstruction.add_camera_with_trivial_rig(camera)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image_id, (name, camera, r, t) in enumerate(images, start=1):
        image = pycolmap.Image(name=name, camera_id=camera + 1, image_id=image_id)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(r, float)), np.asarray(t, float))
        reconstruction.add_image_with_trivial_frame(image, pose)
        _, width, height, _ = cameras[camera]
        Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(root / "images" / name)
    for xyz in points:
        reconstruction.add_point3D(np.asarray(xyz, float), pycolmap.Track())
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    if ext == "bin":
        reconstruction.write_binary(str(model))
    else:
        reconstruction.write_text(str(model))


@pytest.mark.parametrize("ext", ["bin", "txt"])
def test_a_pixel_ray_passes_through_the_point_colmap_projects_there(tmp_path, ext):
    fx, fy, cx, cy, width, height = 40.0, 42.0, 15.5, 11.0, 32, 24
    r = rotation("x", -100) @ rotation("z", 30)  # a camera looking roughly along the ground
    t = np.array([0.3, -0.2, 2.0])
    cameras = [("PINHOLE", width, height, [fx, fy, cx, cy])]
    images = [("a.png", 0, r, t), ("b.png", 0, rotation("x", -90), [0, 0, 3.0])]
    write_model(tmp_path, cameras, images, ext=ext)
    scene = load_scene(str(tmp_path), "all")
    frame = next(f for f in scene.frames if f.file_path.endswith("a.png"))
    assert (frame.width, frame.height, frame.fx, frame.fy, frame.cx, frame.cy) == (
        width, height, fx, fy, cx, cy
    )  # fmt: skip
    # COLMAP: pixel (u, v) with centre (u + 0.5, v + 0.5) sees x_cam = z * K^-1 [u+.5, v+.5, 1]
    u, v, depth = 7, 16, 3.5
    x_cam = depth * np.array([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1.0])
    x_world = r.T @ (x_cam - t)
    # the loader's world is COLMAP's turned so that the cameras' mean up is +z
    c2ws = []
    for rot, trans in ((r, t), (rotation("x", -90), np.array([0, 0, 3.0]))):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rot.T, -rot.T @ trans
        c2ws.append(c2w @ np.diag([1.0, -1.0, -1.0, 1.0]))
    world = up_rotation(np.stack(c2ws))
    origins, directions = frame_rays(frame)
    o, d = origins[v * width + u].double().numpy(), directions[v * width + u].double().numpy()
    target = world @ x_world
    along = float(np.dot(target - o, d))
    np.testing.assert_allclose(o + along * d, target, atol=1e-5)
    assert along == pytest.approx(np.linalg.norm(x_cam), rel=1e-5)  # in front, at its distance
    mean_up = np.mean([f.c2w[:3, 1] for f in scene.frames], axis=0)
    np.testing.assert_allclose(mean_up / np.linalg.norm(mean_up), [0, 0, 1], atol=1e-9)


def test_several_cameras_lenses_and_the_points_box(tmp_path):
    cameras = [
        ("OPENCV", 32, 24, [30.0, 31.0, 16.0, 12.0, 0.01, -0.02, 0.001, 0.002]),
        ("SIMPLE_RADIAL", 20, 16, [25.0, 10.0, 8.0, 0.03]),
        ("OPENCV_FISHEYE", 24, 24, [20.0, 20.0, 12.0, 12.0, 0.01, 0.0, 0.0, 0.001]),
    ]
    images = [(f"{i}.png", i % 3, rotation("x", -90 + 5 * i), [0.1 * i, 0, 3.0]) for i in range(9)]
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-1, 1, (200, 3)), [[50.0, 50.0, 50.0]]])  # one stray
    write_model(tmp_path, cameras, images, points)
    scene = load_scene(str(tmp_path), "all")
    assert [f.file_path.rsplit("/", 1)[-1] for f in scene.frames] == [f"{i}.png" for i in range(9)]
    by_name = {f.file_path.rsplit("/", 1)[-1]: f for f in scene.frames}
    assert (by_name["1.png"].width, by_name["1.png"].fx, by_name["1.png"].fy) == (20, 25.0, 25.0)
    assert by_name["1.png"].distortion.k1 == pytest.approx(0.03)
    assert by_name["2.png"].distortion.model == "OPENCV_FISHEYE"
    assert by_name["0.png"].distortion.p2 == pytest.approx(0.002)
    extent = scene.scene_box[1] - scene.scene_box[0]
    assert np.all(extent > 1.9) and np.all(extent < 3.0)  # the stray point does not widen it
    held_out = load_scene(str(tmp_path), "test")  # no splits: every 8th image held out
    assert [f.file_path.rsplit("/", 1)[-1] for f in held_out.frames] == ["0.png", "8.png"]


def test_an_unsupported_lens_or_an_unreadable_model_is_one_line(tmp_path):
    write_model(tmp_path / "a", [("FULL_OPENCV", 16, 16, [20.0, 20, 8, 8] + [0.0] * 8)],
                [("x.png", 0, np.eye(3), [0, 0, 2.0])])  # fmt: skip
    with pytest.raises(MclnfError, match=r"image x\.png: COLMAP camera model FULL_OPENCV is not"):
        load_scene(str(tmp_path / "a"), "all")
    (tmp_path / "b" / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "b" / "sparse" / "0" / "cameras.bin").write_bytes(b"not a model")
    with pytest.raises(MclnfError, match=r"sparse/0: not a readable COLMAP model"):
        load_scene(str(tmp_path / "b"), "all")
    with pytest.raises(MclnfError, match=r"no transforms.json, .* or COLMAP model \(sparse/0/"):
        load_scene(str(tmp_path), "all")
