"""Parameter matching: a one-network baseline as large as all the modules together."""

import dataclasses

from mclnf_dist.fields.stacked_mlp import FieldConfig, layer_sizes


def parameter_count(cfg: FieldConfig, in_features: int, out_features: int) -> int:
    return sum(i * o + o for i, o in layer_sizes(cfg, in_features, out_features))


def matched_width(
    cfg: FieldConfig, in_features: int, out_features: int, num_modules: int
) -> FieldConfig:
    """``cfg`` widened so the network has about ``num_modules`` times the parameters."""
    target = num_modules * parameter_count(cfg, in_features, out_features)
    width = cfg.width
    while (
        parameter_count(dataclasses.replace(cfg, width=width + 1), in_features, out_features)
        <= target
    ):
        width += 1
    return dataclasses.replace(cfg, width=width)
