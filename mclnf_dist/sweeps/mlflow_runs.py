"""MLflow runs of a sweep: one run per trial, child of the sweep's run, and the sweep's own run.

Why not Ray's MLflow integration: a trial's run must be *continued* when Tune restores the trial
(the same run id, no step logged twice), trials follow one another in threads of one reused actor
(the fluent API's process-global active run would leak between them), and the driver must close
the runs of trials an earlier, killed attempt left running. ``setup_mlflow`` and
``MLflowLoggerCallback`` do none of these, so trials log through ``MlflowClient`` with explicit
run ids.
"""

import time
from pathlib import Path
from typing import Any

from mclnf_dist.config import flatten
from mclnf_dist.sweeps.report import TrialRow, best_row
from mclnf_dist.tracking import Tracker


class TrialRun:
    """A trial's MLflow run, child of the sweep's run; continued when the trial already has one.

    Logged through ``MlflowClient`` with an explicit run id, not the fluent API: with reused
    actors, trials follow one another in threads of one process, and a stopped trial never ends a
    process-global active run.
    """

    def __init__(
        self, settings: Any, trial_id: str, params: dict, run_id: str | None = None
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(settings.tracking_uri)
        experiment = self.client.get_experiment_by_name(settings.experiment)
        run_id = run_id or find_trial_run(self.client, experiment.experiment_id, settings, trial_id)
        self.logged_until = 0
        """Rounds the run already has: a trial that restarts from an earlier round (no checkpoint
        yet, or one older than its last MLflow point) repeats them; they are not logged twice."""
        if run_id is None:
            tags = {
                "mlflow.parentRunId": settings.parent_run_id,
                "sweep": settings.sweep,
                "trial_id": trial_id,
                "pipeline": settings.space.pipeline.name,
            }
            run = self.client.create_run(experiment.experiment_id, run_name=trial_id, tags=tags)
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "round")
            self.logged_until = max((int(p.step) for p in history), default=0)
        self.run_id = run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if step <= self.logged_until:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def find_trial_run(client: Any, experiment_id: str, settings: Any, trial_id: str) -> str | None:
    """The id of this trial's MLflow run, if an earlier attempt created one."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{settings.parent_run_id}' and tags.trial_id = '{trial_id}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def existing_run(tracking_uri: str, run_id: str | None) -> str | None:
    """``run_id`` if that run is in this tracking store (a resumed sweep continues its run)."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri).get_run(run_id).info.run_id
    except MlflowException:
        return None


def finish_trial_runs(
    tracking_uri: str, experiment_id: str, parent_run_id: str, rows: list[TrialRow]
) -> None:
    """Tag every trial's MLflow run with its outcome and make sure it is closed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=10000)
    by_trial = {r.data.tags.get("trial_id"): r for r in runs if "trial_id" in r.data.tags}
    known = {row.trial_id for row in rows}
    for trial_id, run in by_trial.items():  # from an attempt killed before Tune saved its state
        if trial_id not in known and run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "outcome", "abandoned")
            client.set_terminated(run.info.run_id, "KILLED")
    for row in rows:
        run = by_trial.get(row.trial_id)
        if run is None:
            continue
        client.set_tag(run.info.run_id, "outcome", row.status)
        client.set_tag(run.info.run_id, "stopped_early", str(row.stopped_early).lower())
        status = "FAILED" if row.error is not None else "FINISHED"
        if run.info.status != status:
            client.set_terminated(run.info.run_id, status)


def log_to_parent(parent: Tracker, rows: list[TrialRow], folder: Path) -> None:
    best = best_row(rows)
    parent.log_metrics(
        {
            "trials": len(rows),
            "trials_stopped_early": sum(r.stopped_early for r in rows),
            "trials_failed": sum(r.error is not None for r in rows),
        }
    )
    if best is not None:
        parent.log_metrics({"best_val_psnr": best.val_psnr})
        for key, value in flatten({"best": best.params}).items():
            parent.mlflow.set_tag(key, str(value))
        parent.mlflow.set_tag("best_trial_id", best.trial_id)
    for file in ("best_config.yaml", "results.md", "trials.csv", "val_psnr.png", "summary.json"):
        if (folder / file).exists():
            parent.log_artifact(folder / file, "sweep")
