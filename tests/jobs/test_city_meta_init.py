"""Real meta-learning on a city: ``theta_0`` meta-trained on some blocks (Ray Train, in-process
worker) makes modules of blocks it NEVER saw start and stay far above a random init, scored on
held-out views of those blocks. This is the issue's headline claim, on a smaller city and budget
than the default job (which reaches a ~5 dB margin at step 64; see the closing note of issue 4).
"""

import json
import time
from pathlib import Path

import pytest

from mclnf_dist.config import parse_config
from mclnf_dist.jobs.city import CityExperimentConfig, run_city

STEPS = 32


@pytest.mark.timeout(900)
def test_meta_learned_init_beats_random_on_held_out_blocks(ray_local, tmp_path, pixel_leaks):
    argv = [
        "--data.work-dir", str(tmp_path),
        "--data.image-size", "32",
        "--data.views-per-block", "8",
        "--train.num-workers", "1",
        "--meta.outer-steps", "150",
        "--adapt.max-steps", str(STEPS),
        "--methods", "random", "mod",
        "--render-views", "1",
        "--block.steps", "4", "--block.batch-rays", "128", "--block.probe-rays", "128",
        "--run-name", f"meta{time.time_ns()}",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    report = run_city(parse_config(CityExperimentConfig, argv))
    assert report["blocks"]["held_out"] == [4, 5]
    saved = json.loads(Path(report["run_folder"], "results.json").read_text())
    drawn, leaks = pixel_leaks(saved, str(tmp_path / "rays" / "train"))
    assert drawn > 0 and leaks == 0  # theta_0 never saw a pixel stored in blocks 4 or 5
    held = report["held_out_blocks"]
    random, mod = held["random"], held["mod"]
    print(f"\nheld-out blocks: random {random}\nmod {mod}")
    assert mod["psnr_step1"] >= random["psnr_step1"] + 4.0
    assert mod[f"psnr_step{STEPS}"] >= random[f"psnr_step{STEPS}"] + 2.0
    # (mod's forgetting is 0 by construction of the modular protocol, not a learning result;
    # that later segments leave earlier modules untouched is tested in test_learning_faces.py)
