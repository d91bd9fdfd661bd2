"""One tracking path: MLflow. A local sqlite store in the working directory unless told otherwise.

The tracking URI comes from, in order: an explicit value (``--tracking-uri``), the
``MLFLOW_TRACKING_URI`` environment variable, ``sqlite:///<cwd>/mlflow.db``. Artifacts of a sqlite
store go next to the database (``mlartifacts/``), never into an unrelated folder.
"""

import os
from pathlib import Path
from typing import Any

from mclnf_dist.config import flatten


def resolve_tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ensure_experiment(name: str, tracking_uri: str) -> str:
    """Create (once) and return the experiment id; call from the driver before any worker logs."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        artifact_location = root.resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


class Tracker:
    """A thin wrapper over one MLflow run (params, metrics by step, artifacts)."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tracking_uri: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        import mlflow

        self.mlflow = mlflow
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        experiment_id = ensure_experiment(experiment, self.tracking_uri)
        self.run = mlflow.start_run(
            run_id=run_id, experiment_id=experiment_id, run_name=run_name, tags=tags
        )
        self.run_id = self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: str(v)[:500] for k, v in flatten(params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 100):
            self.mlflow.log_params(dict(items[start : start + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
        self.mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder)

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        else:  # Ctrl-C / SIGTERM: the run was stopped, not broken
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
