"""Which init each method of the city job starts from, and the field of that init (apart from the
job, so its pre-flight checks can load ``--meta.init-from`` for the same keys before any work)."""

import dataclasses
import math

from mclnf_dist.fields.sizing import matched_width
from mclnf_dist.meta.fim import FimConfig
from mclnf_dist.meta.methods import MethodSpec
from mclnf_dist.nerf.field import POINT_FEATURES, RAW_CHANNELS, RadianceFieldConfig


def meta_key(spec: MethodSpec, fim: FimConfig) -> str:
    """Methods with the same meta-objective share one meta-training: ``mse`` (maml and mod: every
    block a task), ``fim`` (mim; ``mse`` too while ``fim_lambda`` is 0, which is exactly the
    MSE loss), ``oml`` (blocks streamed through one network's head)."""
    if spec.meta_schedule == "sequential":
        return "oml"
    return "fim" if spec.fim and not fim.is_mse else "mse"


MATCHED = "-matched"
"""Suffix of the inits (and meta-objectives) of parameter-matched one-network methods."""


def init_key(cfg, spec: MethodSpec) -> str:
    """Which init a method starts from: ``random`` or its meta-objective, with :data:`MATCHED`
    for a one-network method when ``param_match`` widens it to all the modules' size."""
    key = meta_key(spec, cfg.fim) if spec.meta_learned else "random"
    return key + MATCHED if cfg.param_match and not spec.modular else key


def key_field(field_cfg: RadianceFieldConfig, key: str, num_blocks: int) -> RadianceFieldConfig:
    """The field of an init: the module's, or for a :data:`MATCHED` key one network widened to
    about ``num_blocks`` modules' parameters (an MLP: wider; a grid field: larger tables, the
    next power of two of ``num_blocks`` times, since a table size is a power of two)."""
    if not key.endswith(MATCHED):
        return field_cfg
    if field_cfg.kind == "hash_grid":  # the tables hold nearly all parameters: 2^k times larger
        grid = field_cfg.grid.grid
        larger = dataclasses.replace(
            grid, log2_table_size=grid.log2_table_size + math.ceil(math.log2(max(1, num_blocks)))
        )
        return dataclasses.replace(field_cfg, grid=dataclasses.replace(field_cfg.grid, grid=larger))
    mlp = matched_width(field_cfg.mlp, POINT_FEATURES, RAW_CHANNELS, num_blocks)
    return dataclasses.replace(field_cfg, mlp=mlp)
