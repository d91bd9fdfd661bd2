"""Meta-batches of signals: ``meta.rows_per_segment`` bounds a meta-step on large signals."""

import torch

from mclnf_dist.meta.meta_learning import MetaConfig
from mclnf_dist.meta.outer_loop import SignalEpisodes


def test_rows_per_segment_draws_the_same_random_rows_of_every_segment():
    segments, n, signals = 4, 64, 5
    coords = torch.randn(segments, n, 2)
    # a signal's value at a row encodes (signal, segment, row), so rows can be traced back
    values = torch.arange(signals * segments * n, dtype=torch.float32).reshape(
        signals, segments, n, 1
    )
    meta = MetaConfig(meta_batch_size=3, rows_per_segment=8)
    episode = SignalEpisodes("modular", meta, coords, values, torch.Generator().manual_seed(0))
    x, y = episode.next_episode({}).context[0]
    assert x.shape == (3 * segments, 8, 2) and y.shape == (3 * segments, 8, 1)
    rows = (y[:, :, 0].long() % n).unique(dim=0)
    assert rows.shape[0] == 1  # every task got the same rows
    picked = rows[0]
    assert len(set(picked.tolist())) == 8  # distinct rows
    assert torch.equal(x[0], coords[0, picked])  # coordinates and values stay paired
    full = SignalEpisodes(
        "modular", MetaConfig(meta_batch_size=3), coords, values, torch.Generator().manual_seed(0)
    )
    assert full.next_episode({}).context[0][0].shape == (3 * segments, n, 2)
