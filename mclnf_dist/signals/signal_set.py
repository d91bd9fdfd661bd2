"""The in-memory form of a set of same-shaped signals, cut into segments.

All signals of one set share one coordinate grid and one segmentation, so a batch of signals is a
single ``values`` tensor and every segment has the same number of coordinates. That is what lets the
modules of all segments (and of many signals) train as one stacked batch with no padding.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mclnf_dist.errors import MclnfError


@dataclass
class SignalSet:
    """Signals of one modality on a shared grid, split into ``num_segments`` equal segments."""

    modality: str
    """``image`` | ``audio`` | ``video``."""
    names: list[str]
    """One name per signal (file name, dataset index), used in reports."""
    coords: Tensor
    """(N, d_in) float32 coordinates in [-1, 1], shared by all signals."""
    values: Tensor
    """(S, N, C) float32 values in [0, 1]."""
    grid_shape: tuple[int, ...]
    """Shape of the grid the N coordinates flatten, e.g. (H, W), (L,), (F, H, W)."""
    segment_index: Tensor
    """(T, N // T) int64: the coordinate indices of each segment, in arrival order."""
    sources: list[str] = field(default_factory=list)
    """One per signal: what it was cut from (file, photo, folder). Signals of one source share
    content (overlapping windows, tiles of one photo, clips of one video), so train/test splits
    keep each source on one side; empty means each signal is its own source (its name)."""

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = list(self.names)
        if len(self.sources) != len(self.names):
            raise MclnfError(
                f"SignalSet has {len(self.names)} names but {len(self.sources)} sources "
                "(expected one source per signal)"
            )

    @property
    def num_signals(self) -> int:
        return self.values.shape[0]

    @property
    def num_segments(self) -> int:
        return self.segment_index.shape[0]

    @property
    def in_features(self) -> int:
        return self.coords.shape[1]

    @property
    def out_features(self) -> int:
        return self.values.shape[2]

    def segment_coords(self) -> Tensor:
        """(T, n, d_in) coordinates of each segment."""
        return self.coords[self.segment_index]

    def segment_values(self) -> Tensor:
        """(S, T, n, C) values of each signal's segments."""
        return self.values[:, self.segment_index]

    def subset(self, indices: list[int] | range) -> "SignalSet":
        """The signals at ``indices`` (same grid and segmentation)."""
        idx = list(indices)
        return SignalSet(
            modality=self.modality,
            names=[self.names[i] for i in idx],
            coords=self.coords,
            values=self.values[idx],
            grid_shape=self.grid_shape,
            segment_index=self.segment_index,
            sources=[self.sources[i] for i in idx],
        )

    def to(self, device: torch.device) -> "SignalSet":
        return SignalSet(
            self.modality,
            self.names,
            self.coords.to(device),
            self.values.to(device),
            self.grid_shape,
            self.segment_index.to(device),
            self.sources,
        )
