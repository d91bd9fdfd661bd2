"""Neural fields as stacked modules: SIREN and positional-encoding MLPs, hash-grid radiance
fields (hash encoding, spherical harmonics, density and colour MLPs), plus hard routing."""

from mclnf_dist.fields.encodings import spherical_harmonics
from mclnf_dist.fields.grid_field import (
    GridFieldConfig,
    grid_density,
    grid_field_evaluate,
    grid_field_forward,
    init_appearance_codes,
    init_grid_params,
    mean_appearance_code,
)
from mclnf_dist.fields.hash_grid import HashGridConfig, hash_encode, init_hash_tables
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
    "GridFieldConfig",
    "HashGridConfig",
    "Params",
    "count_parameters",
    "evaluate",
    "expand_params",
    "forward",
    "grid_density",
    "grid_field_evaluate",
    "grid_field_forward",
    "hash_encode",
    "init_appearance_codes",
    "init_grid_params",
    "init_hash_tables",
    "init_params",
    "map_module_chunks",
    "mean_appearance_code",
    "spherical_harmonics",
]
