"""Block training on a real (tiny) ray store: it learns, it streams (never reads a whole block),
an interrupted block resumes exactly where its checkpoint left it, and a re-run trains only the
blocks not yet done."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from mclnf_dist.city.data import CityDataConfig, prepare_city
from mclnf_dist.distributed import block_training
from mclnf_dist.distributed.block_training import (
    BlockTask,
    BlockTrainingConfig,
    curve_steps,
    lr_at,
    train_block,
    train_blocks,
)
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.nerf.field import field_for_scene, init_radiance_params
from mclnf_dist.progress import ProgressLog
from mclnf_dist.raystore.ingest import ingest_scene
from mclnf_dist.raystore.store import IngestOptions
from mclnf_dist.raystore.stream import BlockReader
from mclnf_dist.scenes.scene import load_scene


@pytest.fixture(scope="module")
def city(tmp_path_factory, ray_local):
    work = tmp_path_factory.mktemp("blocks")
    data = CityDataConfig(
        work_dir=str(work), blocks_x=2, blocks_y=1, image_size=28, views_per_block=4
    )
    return prepare_city(data, ProgressLog("test"))


@pytest.fixture(scope="module")
def small_groups(city, tmp_path_factory):
    """The same training rays stored in row groups of 256 (the reader's unit of work)."""
    uri = str(tmp_path_factory.mktemp("groups") / "train")
    options = IngestOptions(blocks_x=2, blocks_y=1, split="train", rows_per_group=256)
    ingest_scene(city.scene_root, uri, dataclasses.replace(options, progress=False))
    return uri


def make_task(city, root: Path, block: int = 0, **overrides) -> BlockTask:
    scene = load_scene(city.scene_root, "all")
    mlp = FieldConfig(kind="relu_pe", depth=3, width=32, pe_frequencies=6, output_offset=0.0)
    field = field_for_scene(scene, mlp=mlp, num_samples=16)
    cfg = BlockTrainingConfig(
        steps=40, batch_rays=128, lr=1e-2, checkpoint_every=10, probe_rays=256, curve_points=4
    )
    cfg = dataclasses.replace(cfg, **overrides)
    init = init_radiance_params(field, 1, torch.Generator().manual_seed(0))
    return BlockTask(block, "random", init, field, city.train_uri, city.test_uri, cfg, str(root), 7)


def test_schedule_and_curve_steps():
    cfg = BlockTrainingConfig(steps=100, lr=1e-2, final_lr_fraction=0.1)
    assert lr_at(cfg, 1) == pytest.approx(1e-2) and lr_at(cfg, 100) == pytest.approx(1e-3)
    assert curve_steps(100, 4) == [1, 2, 4, 8, 16, 25, 32, 50, 64, 75, 100]


def test_block_training_learns_on_streamed_rays(city, small_groups, tmp_path, monkeypatch):
    """The probe PSNR rises, and the reader decodes far fewer rows than the block holds."""
    decoded = []
    original = BlockReader.read

    def counting_read(self, unit):
        columns = original(self, unit)
        if self.uri == small_groups:
            decoded.append(len(next(iter(columns.values()))))
        return columns

    monkeypatch.setattr(BlockReader, "read", counting_read)
    task = make_task(city, tmp_path, steps=30, shuffle_buffer=512)
    task.train_uri = small_groups
    block_rays = BlockReader(small_groups, 0).num_rows
    result = train_block(task, torch.device("cpu"))
    curve = result.curve
    assert curve[30] > curve[1] + 1.0, curve  # it learned
    rows_needed = 30 * task.cfg.batch_rays
    window = 4 * 512  # the windows in flight: being cut, queued (prefetch 2), one more
    assert block_rays > rows_needed + window  # the block is much bigger than what is needed
    assert rows_needed <= sum(decoded) <= rows_needed + window, (sum(decoded), block_rays)


def test_bf16_autocast_block_training_learns_and_auto_stays_fp32_on_a_cpu(city, tmp_path):
    """``precision=bf16`` (what ``auto`` picks on CUDA) runs the networks' products in bfloat16
    and still learns about as fp32 does; ``auto`` on a CPU is fp32, bit for bit."""
    assert not block_training.uses_bf16(BlockTrainingConfig(), torch.device("cpu"))
    assert block_training.uses_bf16(BlockTrainingConfig(), torch.device("cuda"))
    curves = {}
    for precision in ("bf16", "fp32", "auto"):
        task = make_task(city, tmp_path / precision, steps=30, precision=precision)
        curves[precision] = train_block(task, torch.device("cpu")).curve
    bf16, fp32 = curves["bf16"], curves["fp32"]
    assert bf16[30] > bf16[1] + 1.0, bf16
    assert abs(bf16[30] - fp32[30]) < 1.0, (bf16, fp32)
    assert bf16 != fp32  # bf16 really ran
    assert curves["auto"] == fp32


def test_interrupted_block_resumes_exactly(city, tmp_path, monkeypatch):
    reference = train_block(make_task(city, tmp_path / "reference"), torch.device("cpu"))

    saves = []
    original = block_training.save_checkpoint

    def save_then_die(task, state):  # an injected kill right after the step-20 checkpoint
        original(task, state)
        saves.append(state["step"])
        if state["step"] == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(block_training, "save_checkpoint", save_then_die)
    task = make_task(city, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train_block(task, torch.device("cpu"))
    monkeypatch.setattr(block_training, "save_checkpoint", original)
    resumed = train_block(task, torch.device("cpu"))
    assert saves == [10, 20] and resumed.resumed_from == 20
    for key in reference.params:
        torch.testing.assert_close(resumed.params[key], reference.params[key])
    assert resumed.curve == pytest.approx(reference.curve)


def test_rerun_trains_only_missing_blocks(city, tmp_path):
    log = ProgressLog("test")
    first = train_blocks([make_task(city, tmp_path, block=0, steps=8)], log, parallel=False)
    both = [make_task(city, tmp_path, block=b, steps=8) for b in (0, 1)]
    again = train_blocks(both, log, parallel=True)
    assert again[0].resumed_from == 8 and again[0].seconds == 0.0  # done before: not retrained
    assert again[1].resumed_from == 0 and again[1].seconds > 0.0
    for key in first[0].params:
        assert torch.equal(again[0].params[key], first[0].params[key])
    # the same block under another budget or learning rate is not taken as done: refused, named
    with pytest.raises(MclnfError, match=r"block\.steps 8 -> 4"):
        train_block(make_task(city, tmp_path, block=0, steps=4), torch.device("cpu"))
    with pytest.raises(MclnfError, match=r"block\.lr 0\.01 -> 0\.02"):
        train_block(make_task(city, tmp_path, block=0, steps=8, lr=2e-2), torch.device("cpu"))


def test_progress_lines_inside_a_block_in_process_and_from_ray_tasks(city, tmp_path, capsys):
    """A long block is not silent: step, rays/s, probe PSNR and ETA at intervals, printed here
    in-process and forwarded from Ray tasks (whose own prints the driver does not show)."""
    task = dataclasses.replace(make_task(city, tmp_path / "here", steps=30), report_every_s=0.0)
    train_block(task, torch.device("cpu"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "step " in line]
    assert len(lines) == 29, lines  # every step but the last (its own line comes from the caller)
    assert re.search(r"block 0 \(random init\): step 16/30, [\d,]+ rays/s, probe PSNR [\d.]+ dB "
                     r"\(step 16\), ETA \d+ s", "\n".join(lines)), lines  # fmt: skip
    tasks = [
        dataclasses.replace(
            make_task(city, tmp_path / "ray", block=b, steps=60), report_every_s=0.2
        )
        for b in (0, 1)
    ]
    train_blocks(tasks, ProgressLog("test"), parallel=True)
    forwarded = [line for line in capsys.readouterr().out.splitlines() if "/60, " in line]
    assert forwarded and all("rays/s" in line and "ETA" in line for line in forwarded), forwarded
