"""A sweep trial on CUDA (run where a GPU is present; prints one JSON line).

The GPU machines this is checked on have no Ray, so this runs what every Tune trial runs,
:func:`~mclnf_dist.sweeps.trial.meta_train_and_validate`, on the trial's device: an image trial
and (with ``--city``) a city trial, each on the GPU and on the CPU from one config, plus the GPU
trial resumed from its mid-way state (as a restored Tune trial is). The Ray side (a trial asks
for ``gpus_per_trial``, and only then computes on CUDA) is in ``tests/sweeps``.

    python bench/cuda_sweep_trial.py --save-city .gpu_city   # here, with Ray: a tiny city
    python bench/cuda_sweep_trial.py --city .gpu_city        # on the GPU machine
"""

import argparse
import copy
import dataclasses
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from mclnf_dist.progress import ProgressLog  # noqa: E402
from mclnf_dist.sweeps.space import load_space  # noqa: E402
from mclnf_dist.sweeps.trial import meta_train_and_validate  # noqa: E402

IMAGES = """
pipeline: signals
base:
  recipe: image
  data: {num_train: 40, num_test: 4}
  meta: {outer_steps: 60, meta_batch_size: 8}
metric: {name: val_psnr, adapt_step: 8, every: 20}
space:
  fim.fim_lambda: {dist: choice, values: [0.5]}
"""

CITY = """
pipeline: city
base:
  data: {{work_dir: {work}, blocks_x: 2, blocks_y: 2, image_size: 24, views_per_block: 4,
          fit_rays_per_block: 512, score_rays_per_block: 512}}
  meta: {{outer_steps: 40}}
  train: {{rays_per_task: 256}}
  field: {{num_samples: 24}}
metric: {{name: val_psnr, adapt_step: 8, every: 20}}
space:
  fim.fim_lambda: {{dist: choice, values: [0.5]}}
"""
PREPARED = "prepared.pkl"


def space_of(text: str, folder: Path):
    path = folder / "space.yaml"
    path.write_text(text)
    return load_space(path)


def trial(cfg, prepared, space, device: torch.device, state: dict | None = None) -> dict:
    """One trial; returns its final metrics, wall time and its state at the first report."""
    states: list[dict] = []
    start = time.perf_counter()
    last = meta_train_and_validate(
        cfg, prepared, space, lambda m, s: states.append(copy.deepcopy(s)), state, None, device
    )
    seconds = time.perf_counter() - start
    return {"metrics": last, "seconds": round(seconds, 2), "first_state": states[0]}


def compare(cfg, prepared, space, device: torch.device) -> dict:
    """GPU vs CPU from one config, and the GPU trial resumed from its first report."""
    gpu = trial(cfg, prepared, space, device)
    cpu = trial(cfg, prepared, space, torch.device("cpu"))
    resumed = trial(cfg, prepared, space, device, gpu["first_state"])
    rounded = {k: round(v, 3) for k, v in gpu["metrics"].items()}
    return {
        str(device): rounded,
        "cpu_val_psnr": round(cpu["metrics"]["val_psnr"], 3),
        "resumed_val_psnr": round(resumed["metrics"]["val_psnr"], 3),
        "resumed_from_round": gpu["first_state"]["round"],
        f"{device}_s": gpu["seconds"],
        "cpu_s": cpu["seconds"],
    }


def save_city(folder: Path) -> None:
    """Generate and ingest a tiny city (needs Ray) and pickle what trials need."""
    from mclnf_dist.sweeps.targets import prepare_city_target

    folder.mkdir(parents=True, exist_ok=True)
    space = space_of(CITY.format(work=folder.resolve()), folder)
    prepared = prepare_city_target(space.base_config(), ProgressLog("city"))
    (folder / PREPARED).write_bytes(pickle.dumps((str(folder.resolve()), prepared)))


def load_city(folder: Path):
    """The pickled city, its absolute paths moved to where ``folder`` is now."""
    old, prepared = pickle.loads((folder / PREPARED).read_bytes())
    new = str(folder.resolve())
    city = prepared.city
    moved = {k: getattr(city, k).replace(old, new) for k in ("scene_root", "train_uri", "test_uri")}
    prepared.city = dataclasses.replace(city, **moved)
    return space_of(CITY.format(work=new), folder), prepared


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--city", type=Path, help="a folder written by --save-city")
    parser.add_argument("--save-city", type=Path)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    args = parser.parse_args()
    if args.save_city:
        save_city(args.save_city)
        return
    device = torch.device(args.device)
    from mclnf_dist.sweeps.targets import prepare_signals_target

    report = {"bench": "cuda_sweep_trial", "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        space = space_of(IMAGES, Path(tmp))
        prepared = prepare_signals_target(space.base_config(), ProgressLog("images"))
        report["image"] = compare(space.trial_config({}), prepared, space, device)
    if args.city:
        space, prepared = load_city(args.city)
        report["city"] = compare(space.trial_config({}), prepared, space, device)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
