"""What a trial asks Ray for, and how many trials a cluster holds at once (pure functions: the
GPU side is checked on a GPU machine by ``bench/cuda_sweep_trial.py``)."""

import pytest

from mclnf_dist.errors import MclnfError
from mclnf_dist.sweeps.driver import SweepConfig, check, trial_resources, trials_that_fit
from mclnf_dist.sweeps.space import load_space

CPU_BOX = {"CPU": 2.0}
GPU_BOX = {"CPU": 16.0, "GPU": 2.0}


@pytest.mark.parametrize(
    "gpus, cluster, expected",
    [
        (-1, CPU_BOX, 0.0),  # auto: no GPU in the cluster
        (-1, GPU_BOX, 1.0),  # auto: a whole GPU each
        (0, GPU_BOX, 0.0),  # CPU trials on a GPU cluster when asked
        (0.25, GPU_BOX, 0.25),  # four trials share a GPU
        (2, GPU_BOX, 2.0),
    ],
)
def test_trials_ask_for_the_gpus_the_config_and_cluster_give(gpus, cluster, expected):
    resources = trial_resources(SweepConfig(cpus_per_trial=2, gpus_per_trial=gpus), cluster)
    assert resources == {"cpu": 2, "gpu": expected}


@pytest.mark.parametrize(
    "resources, cluster, expected",
    [
        ({"cpu": 1, "gpu": 0.0}, CPU_BOX, 2),
        ({"cpu": 1, "gpu": 0.25}, GPU_BOX, 8),  # the GPUs are the limit
        ({"cpu": 4, "gpu": 0.25}, GPU_BOX, 4),  # the CPUs are the limit
        ({"cpu": 4, "gpu": 1.0}, CPU_BOX, 1),  # nothing fits yet: one at a time (autoscaler)
    ],
)
def test_concurrent_trials_are_what_the_scarcest_resource_holds(resources, cluster, expected):
    assert trials_that_fit(resources, cluster) == expected


def test_bad_gpu_requests_are_one_clear_error(tmp_path):
    space_file = tmp_path / "s.yaml"
    space_file.write_text(
        "pipeline: signals\nbase: {recipe: image}\n"
        "space: {fim.fim_lambda: {dist: choice, values: [0.0, 0.5]}}\n"
    )
    space = load_space(space_file)
    with pytest.raises(MclnfError, match=r"gpus_per_trial must be >= 0 \(or -1: auto\), got -2"):
        check(SweepConfig(space=str(space_file), gpus_per_trial=-2), space)
    with pytest.raises(MclnfError, match="above 1 must be whole, got 1.5"):
        trial_resources(SweepConfig(gpus_per_trial=1.5), GPU_BOX)
