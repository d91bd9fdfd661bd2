"""Pictures of results: PSNR-vs-step curves and reconstructions beside the ground truth."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mclnf_dist.evaluation.protocol import MethodResult  # noqa: E402
from mclnf_dist.signals.signal_set import SignalSet  # noqa: E402


def plot_psnr_curves(results: list[MethodResult], path: str | Path, title: str) -> Path:
    """One line per method, PSNR (dB) against adaptation steps per segment (log x)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for result in results:
        steps = sorted(result.curve)
        style = "-" if result.group.startswith("meta") else "--"
        ax.plot(
            steps, [result.curve[s] for s in steps], style, marker="o", ms=3, label=result.method
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("adaptation steps per segment")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_reconstructions(
    results: list[MethodResult], signals: SignalSet, path: str | Path, max_signals: int = 3
) -> Path:
    """Ground truth and every method's final reconstruction, side by side, for a few signals."""
    shown = [r for r in results if r.reconstruction is not None]
    rows = min(max_signals, signals.num_signals)
    cols = 1 + len(shown)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for row in range(rows):
        panels = [("truth", signals.values[row])] + [
            (r.method, r.reconstruction[row]) for r in shown
        ]
        for col, (name, values) in enumerate(panels):
            ax = axes[row][col]
            _draw(ax, values.detach().cpu().numpy(), signals)
            if row == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _draw(ax, values: np.ndarray, signals: SignalSet) -> None:
    """Draw one signal's (N, C) values: an image, a waveform, or a video's frames in a row."""
    values = np.clip(values, 0.0, 1.0)
    if signals.modality == "audio":
        ax.plot(values[:, 0] * 2 - 1, lw=0.4)
        ax.set_ylim(-1, 1)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    image = values.reshape(*signals.grid_shape, values.shape[-1])
    if signals.modality == "video":  # frames side by side
        image = np.concatenate(list(image), axis=1)
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")


def plot_step_curves(curves: dict[str, dict[int, float]], path: str | Path, title: str) -> Path:
    """One line per init: PSNR (dB) against training steps (block training's probe curves)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, curve in curves.items():
        steps = sorted(curve)
        ax.plot(steps, [curve[s] for s in steps], marker="o", ms=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training steps per block")
    ax.set_ylabel("PSNR (dB), held-out rays")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
