"""Cost of a FIM-loss step relative to a plain MSE step (issue: FIM step <= 1.5x MSE step).

A step = forward, loss, gradient of 16 stacked 5x256 SIREN modules on 4096 coordinates in all
(256 each). The FIM step gets its per-sample Fisher weights and its weighted gradient from the
same single backward pass. For reference it also times the naive route, per-sample gradients by
``torch.func.vmap(grad)``, on one module.

    python bench/fim_overhead.py            # prints one JSON line
"""

import json
import sys
from pathlib import Path

import torch
from torch.func import grad, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compare, machine  # noqa: E402

from mclnf_dist.device import pick_device  # noqa: E402
from mclnf_dist.fields.stacked_mlp import FieldConfig, forward, init_params  # noqa: E402
from mclnf_dist.meta.fim import FimConfig  # noqa: E402
from mclnf_dist.meta.inner_loop import loss_and_grads, per_sample_loss  # noqa: E402


def main() -> None:
    device = pick_device("auto")
    modules, coords_total = 16, 4096
    per_module = coords_total // modules
    field = FieldConfig(depth=5, width=256)
    generator = torch.Generator().manual_seed(0)
    params = init_params(field, 2, 3, modules, generator, device)
    params = {k: v.requires_grad_() for k, v in params.items()}
    x = (torch.rand(modules, per_module, 2, generator=generator) * 2 - 1).to(device)
    y = torch.rand(modules, per_module, 3, generator=generator).to(device)
    fim = FimConfig(fim_lambda=1.0, beta=0.1)

    def mse_step():
        return loss_and_grads(field, params, x, y, None)

    def fim_step():
        return loss_and_grads(field, params, x, y, fim)

    one = {k: v[0].detach() for k, v in params.items()}

    def sample_loss(p, xj, yj):
        batch = {k: v[None] for k, v in p.items()}
        return per_sample_loss(forward(field, batch, xj[None, None]), yj[None, None])[0, 0]

    def vmap_fisher_one_module():  # the naive per-sample route, 1/16 of the work
        return vmap(grad(sample_loss), in_dims=(None, 0, 0))(one, x[0], y[0])

    times = compare({"mse": mse_step, "fim": fim_step, "vmap_1_module": vmap_fisher_one_module})
    print(
        json.dumps(
            {
                "bench": "fim_overhead",
                "machine": machine(),
                "device": str(device),
                "setup": {"field": "siren 5x256", "modules": modules, "coords_total": coords_total},
                "mse_step_s": round(times["mse"], 5),
                "fim_step_s": round(times["fim"], 5),
                "fim_mse_ratio": round(times["fim"] / times["mse"], 3),
                "vmap_per_sample_all_modules_est_s": round(times["vmap_1_module"] * modules, 4),
                "target": "fim_mse_ratio <= 1.5",
            }
        )
    )


if __name__ == "__main__":
    main()
