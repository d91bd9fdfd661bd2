"""The field of each init of the city job (apart from the job, so its pre-flight checks can load
``--meta.init-from`` for the same keys before any work); which init a method starts from is
:func:`mclnf_dist.meta.methods.init_key`."""

import dataclasses
import math

from mclnf_dist.fields.sizing import matched_width
from mclnf_dist.meta.methods import InitKey
from mclnf_dist.nerf.field import POINT_FEATURES, RAW_CHANNELS, RadianceFieldConfig


def key_field(field_cfg: RadianceFieldConfig, key: InitKey, num_blocks: int) -> RadianceFieldConfig:
    """The field of an init: the module's, or for a matched key one network widened to
    about ``num_blocks`` modules' parameters (an MLP: wider; a grid field: larger tables, the
    next power of two of ``num_blocks`` times, since a table size is a power of two)."""
    if not key.matched:
        return field_cfg
    if field_cfg.kind == "hash_grid":  # the tables hold nearly all parameters: 2^k times larger
        grid = field_cfg.grid.grid
        larger = dataclasses.replace(
            grid, log2_table_size=grid.log2_table_size + math.ceil(math.log2(max(1, num_blocks)))
        )
        return dataclasses.replace(field_cfg, grid=dataclasses.replace(field_cfg.grid, grid=larger))
    mlp = matched_width(field_cfg.mlp, POINT_FEATURES, RAW_CHANNELS, num_blocks)
    return dataclasses.replace(field_cfg, mlp=mlp)
