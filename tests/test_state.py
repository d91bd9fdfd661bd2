"""The one state format: no loader runs code from a file, a torn or foreign file is one line, and a
checkpoint made under other settings is refused with what differs."""

import io
import os
import pickle

import pytest
import torch

from mclnf_dist.city.init_asset import load_init, save_init
from mclnf_dist.city.model import load_city_model
from mclnf_dist.distributed.checkpoints import CheckpointStore
from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params
from mclnf_dist.state import fingerprint, load_state, read_state, save_state
from mclnf_dist.sweeps.trial import STATE_FILE, TRIAL_STATE


class RunsACommand:
    """A pickle payload that would create ``marker`` when unpickled by a code-running loader."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_file(path, marker) -> None:
    buffer = io.BytesIO()
    torch.save({"theta0": RunsACommand(str(marker)), "state": RunsACommand(str(marker))}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    assert not marker.exists()


def small_field() -> RadianceFieldConfig:
    mlp = FieldConfig(kind="relu_pe", depth=2, width=8, pe_frequencies=2, output_offset=0.0)
    return RadianceFieldConfig(mlp=mlp, num_samples=4)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def load_block_checkpoint(path):
    from mclnf_dist.distributed import block_training

    return block_training.load_state(str(path), block_training.CHECKPOINT)


LOADERS = {
    "theta_0 asset": (
        "theta0-mse.pt",
        lambda p: load_init(str(p), "mse", init_radiance_params(small_field(), 1)),
    ),
    "meta-init checkpoint": (
        "meta-init-00000003.pt",
        lambda p: CheckpointStore(str(p.parent)).load_latest(),
    ),
    "block checkpoint": ("block-0000.pt", load_block_checkpoint),
    "city model": ("blocks-meta.pt", lambda p: load_city_model(str(p.parent), "blocks-meta")),
    "sweep trial checkpoint": (STATE_FILE, lambda p: load_state(str(p), TRIAL_STATE)),
}


@pytest.mark.parametrize("kind", list(LOADERS))
def test_a_malicious_pickle_runs_nothing_and_is_one_line(tmp_path, kind):
    name, load = LOADERS[kind]
    marker = tmp_path / "pwned"
    malicious_file(tmp_path / "store" / name, marker)
    with pytest.raises(MclnfError) as err:
        load(tmp_path / "store" / name)
    assert "could run code" in one_line(err) and name in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", list(LOADERS))
def test_a_truncated_file_is_one_line_naming_it(tmp_path, kind):
    name, load = LOADERS[kind]
    path = tmp_path / "store" / name
    path.parent.mkdir()
    save_state(str(path), kind, {"theta0": {}, "params": {}})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(MclnfError) as err:
        load(path)
    assert "truncated or corrupt" in one_line(err) and str(path) in str(err.value)


def test_a_foreign_torch_file_or_another_kind_is_refused(tmp_path):
    torch.save({"theta0": {"w0": torch.zeros(1, 2)}}, tmp_path / "theta0-mse.pt")
    with pytest.raises(MclnfError, match="not an mclnf state file"):
        read_state(str(tmp_path / "theta0-mse.pt"), "theta_0 asset")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(MclnfError, match="refused|corrupt"):
        read_state(str(tmp_path / "plain.pt"), "theta_0 asset")
    save_state(str(tmp_path / "x.pt"), "city model", {})
    with pytest.raises(MclnfError, match="a city model, not a block checkpoint"):
        read_state(str(tmp_path / "x.pt"), "block checkpoint")


def test_real_files_round_trip_with_weights_only(tmp_path):
    field = small_field()
    theta0 = init_radiance_params(field, 1, torch.Generator().manual_seed(1))
    save_init(tmp_path, "mse", theta0, field)
    loaded = load_init(str(tmp_path), "mse", theta0)
    assert all(torch.equal(loaded[k], theta0[k]) for k in theta0)
    adam = torch.optim.Adam([torch.zeros(3, requires_grad=True)])
    state = {"adam": adam.state_dict(), "curve": {1: 2.0}, "rng": torch.get_rng_state()}
    save_state(str(tmp_path / "c.pt"), "block checkpoint", state, fingerprint(a=(1, 2)))
    back, recorded = read_state(str(tmp_path / "c.pt"), "block checkpoint")
    assert back["curve"] == {1: 2.0} and recorded == {"a": [1, 2]}


def test_a_fingerprint_mismatch_names_what_differs(tmp_path):
    path = str(tmp_path / "c.pt")
    save_state(path, "block checkpoint", {}, fingerprint(block={"steps": 300, "lr": 0.01}))
    load_state(path, "block checkpoint", fingerprint(block={"steps": 300, "lr": 0.01}))
    with pytest.raises(MclnfError) as err:
        load_state(path, "block checkpoint", fingerprint(block={"steps": 100, "lr": 0.01}))
    assert "block.steps 300 -> 100" in one_line(err) and "--fresh" in str(err.value)
    store = CheckpointStore(str(tmp_path / "meta"), fingerprint=fingerprint(outer_lr=0.01))
    store.save(1, {"outer": {}})
    assert (
        CheckpointStore(
            str(tmp_path / "meta"), fingerprint=fingerprint(outer_lr=0.01)
        ).check_latest()
        == 1
    )
    with pytest.raises(MclnfError, match="outer_lr 0.01 -> 0.001"):
        CheckpointStore(
            str(tmp_path / "meta"), fingerprint=fingerprint(outer_lr=0.001)
        ).check_latest()
