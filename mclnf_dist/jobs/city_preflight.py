"""Everything the city job can check before Ray starts, data is ingested or a run is tracked.

The config's own choices, ranges and cross-field rules are checked by the parse
(:func:`mclnf_dist.config.check_config`); this adds what needs the disk or other files:

* the work folder and a local ray-store root can be written (:func:`check_writable`);
* ``--meta.init-from`` loads and has the parameter shapes of the job's field (the shapes follow
  from the config's MLP alone, not from the scene);
* ``--extend``: the saved model loads, is modular, its ``theta_0`` fits it, and the new capture
  can belong to its world (:mod:`mclnf_dist.city.world`) and lies in its box.
"""

import torch

from mclnf_dist.city.init_asset import load_init
from mclnf_dist.city.inits import key_field
from mclnf_dist.errors import MclnfError
from mclnf_dist.experiments.city_config import CityExperimentConfig
from mclnf_dist.meta.methods import MSE, get_method, init_key
from mclnf_dist.nerf.field import init_radiance_params
from mclnf_dist.preflight import check_writable


def preflight_city(cfg: CityExperimentConfig) -> None:
    """Raise one :class:`MclnfError` line at the first thing that would stop the job later."""
    check_writable(cfg.data.work_dir, "--data.work-dir")
    if cfg.data.data_uri:
        check_writable(cfg.data.data_uri, "--data.data-uri")
    if cfg.extend:
        check_extension(cfg)
    elif cfg.meta.init_from:
        check_init_from(cfg)


def check_init_from(cfg: CityExperimentConfig) -> None:
    """Load every init the job would take from ``--meta.init-from`` and check its shapes, as
    :func:`mclnf_dist.jobs.city.loaded_init` will (a missing objective falls back to ``mse``)."""
    blocks = len(cfg.data.block_order)  # a matched width needs the block count: when given
    for spec in (get_method(name) for name in cfg.methods):
        key = init_key(spec, cfg.fim.fim_lambda, blocks_are_tasks=True, param_match=cfg.param_match)
        if not key.meta_learned or (key.matched and not blocks):
            continue
        like = init_radiance_params(key_field(cfg.field, key, blocks), 1, torch.Generator())
        try:
            load_init(cfg.meta.init_from, key, like, cfg.run.tracking_uri)
        except MclnfError:
            if key == MSE:
                raise
            load_init(cfg.meta.init_from, "mse", like, cfg.run.tracking_uri)


def check_extension(cfg: CityExperimentConfig) -> None:
    """The ``--extend`` model and its ``theta_0`` load and fit; the new capture fits the model."""
    from mclnf_dist.city.extend import open_extension

    open_extension(cfg)
