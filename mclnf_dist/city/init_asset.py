"""``theta_0`` as an asset: saved with every run, loadable by a later job.

A meta-learned init is written into the run's city model folder as ``theta0-<objective>.pt``
(logged to the run's MLflow artifacts under ``city_model/``), with the field it belongs to. A
later job names one with ``--meta.init-from``: a file, a folder holding it, an ``s3://`` URI,
or an MLflow run (``mlflow:<run id>``), so a new scene, or one with too few blocks to
meta-train on, starts from an init learned elsewhere instead of meta-training its own; an
extension of the city model (``--extend``) starts its new blocks from it.
"""

import dataclasses
from pathlib import Path

from mclnf_dist.errors import MclnfError
from mclnf_dist.fields.stacked_mlp import Params
from mclnf_dist.meta.methods import InitKey
from mclnf_dist.nerf.field import RadianceFieldConfig
from mclnf_dist.runs import city_model_folder
from mclnf_dist.state import load_state, save_state
from mclnf_dist.storage import filesystem_for, is_local, join
from mclnf_dist.tracking import resolve_tracking_uri

MLFLOW_PREFIX = "mlflow:"
KIND = "theta_0 asset"


def asset_name(key: str | InitKey) -> str:
    """File name of the ``key`` meta-objective's init (``mse``, ``fim``, ``oml``)."""
    return f"theta0-{key}.pt"


def save_init(
    folder: str | Path, key: str | InitKey, theta0: Params, field: RadianceFieldConfig
) -> str:
    """Write the init atomically (the one state format); returns its path."""
    state = {
        "theta0": {k: v.detach().cpu() for k, v in theta0.items()},
        "field": dataclasses.asdict(field),
        "objective": str(key),
    }
    return save_state(join(str(folder).rstrip("/"), asset_name(key)), KIND, state)


def locate(source: str, key: str | InitKey, tracking_uri: str = "") -> str:
    """A local path or URI of the init file that ``source`` names."""
    if source.startswith(MLFLOW_PREFIX):
        import mlflow

        run_id = source.removeprefix(MLFLOW_PREFIX)
        try:
            return mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"city_model/{asset_name(key)}",
                tracking_uri=resolve_tracking_uri(tracking_uri or None),
            )
        except Exception as err:  # MLflow raises several types for a missing run or artifact
            raise MclnfError(
                f"--meta.init-from {source}: no city_model/{asset_name(key)} in that MLflow run "
                f"({str(err).splitlines()[0]})"
            ) from None
    fs, path = filesystem_for(source)
    if is_local(fs) and fs.isdir(path) and not fs.exists(join(path, asset_name(key))):
        source = path = str(city_model_folder(path))  # a work or run folder: its latest model
    if fs.isdir(path):
        path = join(path, asset_name(key))
        source = join(source, asset_name(key))
    if not fs.exists(path):
        raise MclnfError(
            f"--meta.init-from {source}: file not found (expected a {asset_name(key)} written by "
            "an earlier run, a folder holding one, or mlflow:<run id>)"
        )
    return source


def load_init(source: str, key: str | InitKey, expected: Params, tracking_uri: str = "") -> Params:
    """The init ``source`` names, checked to fit this job's field (``expected``'s shapes)."""
    where = locate(source, key, tracking_uri)
    state = load_state(where, KIND)
    theta0 = state.get("theta0") if isinstance(state, dict) else None
    if not isinstance(theta0, dict):
        raise MclnfError(f"{where}: not a theta_0 asset (expected a file written by save_init)")
    shapes = {k: tuple(v.shape) for k, v in theta0.items()}
    wanted = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != wanted:
        mlp = state.get("field", {}).get("mlp", {})
        raise MclnfError(
            f"{where}: theta_0 of a different field (mlp {mlp}); this job's field needs parameter "
            f"shapes {wanted}, the file has {shapes}"
        )
    return theta0
