"""A sweep trial runs the city job's own meta-training: the same outer loop, the same streamed
episodes, the same seeds. On one tiny one-worker config, the trial (in-process, local Adam) and
the job (a real Ray Train run with the meta-init server) must end with the same ``theta_0``."""

from pathlib import Path

import torch

from mclnf_dist.city.data import city_field
from mclnf_dist.distributed.meta_trainer import meta_train_distributed
from mclnf_dist.jobs.city import worker_job
from mclnf_dist.meta.methods import MSE, get_method
from mclnf_dist.nerf.field import init_radiance_params
from mclnf_dist.progress import ProgressLog
from mclnf_dist.sweeps.space import load_space
from mclnf_dist.sweeps.targets import CityTask
from mclnf_dist.sweeps.trial import meta_train_and_validate

SPACE = """
pipeline: city
base:
  data: {{work_dir: {work}, blocks_x: 2, blocks_y: 2, image_size: 16, views_per_block: 3,
          fit_rays_per_block: 128, score_rays_per_block: 128}}
  meta: {{outer_steps: 4}}
  train: {{rays_per_task: 32, num_workers: 1}}
  field: {{num_samples: 8, mlp: {{width: 16}}}}
metric: {{name: val_psnr, adapt_step: 2, every: 4}}
space:
  fim.fim_lambda: {{dist: choice, values: [0.0]}}
"""


def test_sweep_trial_and_city_job_meta_train_alike(tmp_path: Path, ray_local):
    file = tmp_path / "space.yaml"
    file.write_text(SPACE.format(work=tmp_path / "city"))
    space = load_space(file)
    cfg = space.trial_config({"fim.fim_lambda": 0.0})
    prepared = space.pipeline.prepare(space.base_config(), ProgressLog("test"))

    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.train.cpus_per_worker)  # as the Train worker runs
    try:
        states = []
        meta_train_and_validate(cfg, prepared, space, lambda _m, state: states.append(state))
    finally:
        torch.set_num_threads(previous)
    trial_theta0 = states[-1]["store"]["theta0"]
    assert states[-1]["store"]["version"] == cfg.meta.outer_steps

    field = city_field(cfg.field, prepared.scene)
    assert CityTask(cfg, prepared, torch.device("cpu")).field == field
    assert get_method("mod").meta_learned
    job = worker_job(cfg, MSE, field, prepared.city, str(tmp_path / "runs"))
    init = init_radiance_params(field, 1, torch.Generator().manual_seed(cfg.run.seed))
    job_theta0, history = meta_train_distributed(
        job,
        cfg.train,
        init,
        cfg.meta.outer_lr,
        cfg.meta.grad_clip,
        "shared",
        str(tmp_path / "runs"),
    )
    assert len(history) == cfg.meta.outer_steps
    moved = max(float((job_theta0[k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-4  # meta-training changed theta_0, so equality below means something
    for key in init:
        torch.testing.assert_close(trial_theta0[key], job_theta0[key], rtol=1e-5, atol=1e-6)
