"""A trial's MLflow run on a real sqlite store: a restarted trial continues its own run, and
rounds it repeats (it restarted before its checkpoint was saved) are not logged twice."""

from mlflow.tracking import MlflowClient

from mclnf_dist.sweeps.mlflow_runs import TrialRun
from mclnf_dist.sweeps.space import load_space
from mclnf_dist.sweeps.trial import TrialSettings


def test_a_restarted_trial_continues_its_run_without_duplicate_points(tmp_path, mlflow_uri):
    space_file = tmp_path / "s.yaml"
    space_file.write_text(
        "pipeline: signals\nbase: {data: {modality: image}}\n"
        "space: {fim.fim_lambda: {dist: choice, values: [0.0, 0.5]}}\n"
    )
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("mclnf-sweep-t")
    parent = client.create_run(experiment, tags={"sweep_role": "parent"}).info.run_id
    settings = TrialSettings("t", load_space(space_file), "mclnf-sweep-t", mlflow_uri, parent)

    first = TrialRun(settings, "abc_00001", {"fim.fim_lambda": 0.5})
    for round_ in (4, 8):
        first.log_metrics({"round": round_, "val_psnr": 10.0 + round_}, step=round_)
    # killed; Tune's state had no checkpoint yet: the trial starts again from round 0
    again = TrialRun(settings, "abc_00001", {"fim.fim_lambda": 0.5})
    assert again.run_id == first.run_id
    for round_ in (4, 8, 12):
        again.log_metrics({"round": round_, "val_psnr": 20.0 + round_}, step=round_)
    again.end("FINISHED")

    history = client.get_metric_history(first.run_id, "val_psnr")
    assert sorted((p.step, p.value) for p in history) == [(4, 14.0), (8, 18.0), (12, 32.0)]
    other = TrialRun(settings, "abc_00002", {"fim.fim_lambda": 0.0})
    assert other.run_id != first.run_id and other.logged_until == 0
