"""Pose the fox's photos with ``mclnf dataset from-photos``; compare with the capture's own poses.

    python bench/from_photos.py --max-size 384 --max-features 2048

Prints one JSON line: images registered, seconds per stage, and, after aligning the camera centres
to the capture's ``transforms.json`` by a similarity (Umeyama), the largest and mean camera-centre
error as a share of the scene size and the largest and mean rotation error in degrees.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mclnf_dist.scenes.from_photos import PoseOptions, poses_from_photos
from mclnf_dist.scenes.scene import load_scene

FOX = Path(__file__).resolve().parents[1].parent / "shared" / "scenes" / "fox"


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation, translation) minimising ``|target - (s R source + t)|`` (N, 3)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(b.T @ a / len(source))
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / a.var(0).sum()
    return scale, rotation, mu_t - scale * rotation @ mu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default=str(FOX))
    parser.add_argument("--max-size", type=int, default=1600)
    parser.add_argument("--max-features", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        opts = PoseOptions(max_size=args.max_size, max_features=args.max_features)
        posed = poses_from_photos(str(Path(args.scene) / "images"), out, opts)
        wall = time.perf_counter() - started
        ours = {Path(f.file_path).name: f.c2w for f in load_scene(out, "all").frames}
    theirs = load_scene(args.scene, "all", skip_missing_images=True).frames
    truth_by_name = {Path(f.file_path).name: f.c2w for f in theirs}
    names = sorted(set(ours) & set(truth_by_name))
    mine, truth = np.stack([ours[n] for n in names]), np.stack([truth_by_name[n] for n in names])
    scale, rotation, shift = umeyama(mine[:, :3, 3], truth[:, :3, 3])
    moved = scale * mine[:, :3, 3] @ rotation.T + shift
    size = np.linalg.norm(np.ptp(truth[:, :3, 3], axis=0))
    centre = np.linalg.norm(moved - truth[:, :3, 3], axis=1) / size
    relative = np.einsum("ij,njk->nik", rotation, mine[:, :3, :3])
    cos = (np.einsum("nij,nij->n", relative, truth[:, :3, :3]) - 1) / 2
    degrees = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    print(json.dumps({
        "bench": "from_photos", "max_size": args.max_size, "max_features": args.max_features,
        "registered": len(posed.registered), "images": posed.images, "wall_s": round(wall, 1),
        "stage_s": {k: round(v, 1) for k, v in posed.seconds.items()},
        "centre_error_max": round(float(centre.max()), 4),
        "centre_error_mean": round(float(centre.mean()), 4),
        "rotation_error_max_deg": round(float(degrees.max()), 3),
        "rotation_error_mean_deg": round(float(degrees.mean()), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
