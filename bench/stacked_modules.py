"""Training step (forward + backward) of 16 stacked modules vs a loop of 16 separate modules.

The loop baseline is what one writes without stacking: 16 ``nn.Sequential`` SIRENs of
``nn.Linear`` layers, called one after another. Ours is one stacked parameter set evaluated by
:func:`mclnf_dist.meta.inner_loop.loss_and_grads` (which picks the chunking by size). Two module
sizes: the project's default module (4x64, the size the learning tests use) and the paper's 5x256.

    python bench/stacked_modules.py          # prints one JSON line
"""

import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compare, machine  # noqa: E402

from mclnf_dist.device import pick_device  # noqa: E402
from mclnf_dist.fields.stacked_mlp import FieldConfig, init_params, layer_sizes  # noqa: E402
from mclnf_dist.meta.inner_loop import loss_and_grads  # noqa: E402

MODULES = 16


class Sine(nn.Module):
    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


def loop_modules(field: FieldConfig, device: torch.device) -> list[nn.Sequential]:
    modules = []
    for _ in range(MODULES):
        layers: list[nn.Module] = []
        sizes = layer_sizes(field, 2, 3)
        for index, (fan_in, fan_out) in enumerate(sizes):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < len(sizes) - 1:
                layers.append(Sine(field.w0))
        modules.append(nn.Sequential(*layers).to(device))
    return modules


def speedups(field: FieldConfig, device: torch.device) -> dict[str, float]:
    out = {}
    for coords in (256, 1024, 4096):
        generator = torch.Generator().manual_seed(0)
        params = init_params(field, 2, 3, MODULES, generator, device)
        params = {k: v.requires_grad_() for k, v in params.items()}
        x = (torch.rand(MODULES, coords, 2, generator=generator) * 2 - 1).to(device)
        y = torch.rand(MODULES, coords, 3, generator=generator).to(device)
        loop = loop_modules(field, device)
        loop_params = [p for module in loop for p in module.parameters()]

        def stacked_step(params=params, x=x, y=y):
            return loss_and_grads(field, params, x, y)

        def loop_step(x=x, y=y, loop=loop, loop_params=loop_params):
            loss = sum(((m(x[i]) + 0.5 - y[i]) ** 2).mean() for i, m in enumerate(loop))
            return torch.autograd.grad(loss, loop_params)

        ratios = []
        for _ in range(3):  # the median of three interleaved rounds resists a noisy machine
            times = compare({"stacked": stacked_step, "loop": loop_step}, reps=9, warmup=10)
            ratios.append(times["loop"] / times["stacked"])
        out[str(coords)] = round(statistics.median(ratios), 2)
    return out


def main() -> None:
    device = pick_device("auto")
    default = FieldConfig()
    # A whole untimed pass first: a fresh process runs its first few hundred small GEMMs slower
    # (allocator and oneDNN primitive caches warming), which otherwise lands on the 256 case.
    speedups(default, device)
    print(
        json.dumps(
            {
                "bench": "stacked_modules",
                "machine": machine(),
                "device": str(device),
                "modules": MODULES,
                "module": f"siren {default.depth}x{default.width}",
                "speedup_by_coords": speedups(default, device),
                "speedup_by_coords_5x256": speedups(FieldConfig(depth=5, width=256), device),
                "target": "speedup >= 2 at 256, >= 1.0 everywhere",
            }
        )
    )


if __name__ == "__main__":
    main()
