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

from mclnf_dist.scenes.from_photos import PoseOptions, poses_from_photos
from mclnf_dist.scenes.pose_alignment import pose_errors
from mclnf_dist.scenes.scene import load_scene

FOX = Path(__file__).resolve().parents[1].parent / "shared" / "scenes" / "fox"


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
    errors = pose_errors(ours, {Path(f.file_path).name: f.c2w for f in theirs})
    centre, degrees = errors.centre, errors.degrees
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
