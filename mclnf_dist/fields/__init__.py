"""Neural fields: SIREN and positional-encoding MLPs as stacked modules, plus hard routing."""

from mclnf_dist.fields.stacked_mlp import (
    FieldConfig,
    Params,
    count_parameters,
    evaluate,
    expand_params,
    forward,
    init_params,
    map_module_chunks,
)

__all__ = [
    "FieldConfig",
    "Params",
    "count_parameters",
    "evaluate",
    "expand_params",
    "forward",
    "init_params",
    "map_module_chunks",
]
