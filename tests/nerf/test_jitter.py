"""The sample jitter of a run is its own stream: identical configurations and seeds train
identically (an A/A difference of exactly 0) whatever else drew random numbers before them, and
different seeds differ."""

import torch

from mclnf_dist.evaluation.protocol import MethodContext, evaluate_method
from mclnf_dist.fields.stacked_mlp import FieldConfig
from mclnf_dist.meta.adaptation import AdaptConfig
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.methods import get_method
from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params, pack_rays
from mclnf_dist.nerf.sampling import seeded_jitter, stratified_samples
from mclnf_dist.signals.signal_set import SignalSet


def jittered() -> torch.Tensor:
    return stratified_samples(0.0, 1.0, 8, num_rays=4, perturb=True)


def test_a_seeded_stream_ignores_the_global_generator_and_nests():
    with seeded_jitter(3):
        first = jittered()
    torch.rand(1000)  # whatever else the process drew in between
    with seeded_jitter(3) as stream:
        again = jittered()
        with seeded_jitter(4):
            inner = jittered()
        after = jittered()  # the outer stream goes on where it was
        assert stream.initial_seed() == 3
    with seeded_jitter(3):
        jittered()
        expected_after = jittered()
    assert torch.equal(first, again) and not torch.equal(first, inner)
    assert torch.equal(after, expected_after)
    torch.manual_seed(0)
    unseeded = jittered()  # outside any stream: torch's global generator, as before
    torch.manual_seed(0)
    assert torch.equal(unseeded, jittered())


def rays_signal(segments: int = 2, per_segment: int = 48) -> SignalSet:
    """Random rays through a unit box with random colours, ``segments`` blocks of them."""
    g = torch.Generator().manual_seed(0)
    n = segments * per_segment
    origins = torch.rand(n, 3, generator=g) * 0.2 + 0.4
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    rays = pack_rays(origins, directions, torch.full((n,), 0.05), torch.full((n,), 0.6))
    return SignalSet(
        modality="city",
        names=["rays"],
        coords=rays,
        values=torch.rand(1, n, 3, generator=g),
        grid_shape=(n,),
        segment_index=torch.arange(n).reshape(segments, per_segment),
    )


def curve(name: str, seed: int, signals: SignalSet) -> dict[int, float]:
    mlp = FieldConfig(kind="relu_pe", depth=3, width=16, pe_frequencies=3, output_offset=0.0)
    field = RadianceFieldConfig(mlp=mlp, num_samples=8, scene_box=((0.0,) * 3, (1.0,) * 3))
    init = init_radiance_params(field, 1, torch.Generator().manual_seed(1))
    adapt = AdaptConfig(max_steps=8, batch_size=32, adam_lr=1e-2, sgd_steps=0)
    spec = get_method(name)
    ctx = MethodContext(
        spec, field, init, MetaConfig(), FimConfig(fim_lambda=0.0), adapt, seed=seed
    )
    return evaluate_method(ctx, signals).curve


def test_identical_configurations_and_seeds_differ_by_exactly_zero():
    signals = rays_signal()
    mod = curve("mod", 0, signals)
    torch.rand(12345)  # a different global state, as another task in the same worker leaves
    mim = curve("mim", 0, signals)  # the FIM weight is 0: mod's configuration
    assert mod == mim
    other = curve("mod", 1, signals)
    assert other != mod  # another seed: other minibatches and jitter
