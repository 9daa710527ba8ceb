"""Trackers: each finished run's curves, loss and metrics reach TensorBoard, W&B (offline) and
MLflow (a local folder) with the values of its run folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clbench.cli import entry
from clbench.results import trackers as loggers
from tests.helpers import tiny

pytestmark = pytest.mark.slow


TINY = tiny("finetune", "0", 4, 2, 20, "--jobs", "1")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    out = tmp_path_factory.mktemp("logged") / "exp"
    assert entry(["run", *TINY, "--out", str(out), "--log", "tensorboard,mlflow", "--log", "wandb"]) == 0
    run = out / "runs/split-digits/finetune/seed0"
    return out, run, pd.read_csv(run / "curves.csv"), json.loads((run / "summary.json").read_text())


def _task0(curves: pd.DataFrame) -> dict[int, float]:
    t0 = curves[curves["task"] == 0]
    return dict(zip(t0["iteration"].astype(int), t0["accuracy"].astype(float)))


def test_tensorboard_holds_the_runs_curves(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, run, curves, summary = logged
    events = EventAccumulator(str(out / "tensorboard/split-digits/finetune/seed0")).Reload()
    got = {e.step: e.value for e in events.Scalars("accuracy/task0")}
    assert got == pytest.approx(_task0(curves))
    assert events.Scalars("summary/acc")[0].value == pytest.approx(summary["acc"])
    assert len(events.Scalars("train/loss")) == summary["iterations"]
    assert len(events.Scalars("summary/acc")) == 1  # the HParams view adds no second point


def test_tensorboard_s_hparams_view_has_the_settings_and_metrics(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, run, curves, summary = logged
    events = EventAccumulator(str(out / "tensorboard/split-digits/finetune/seed0")).Reload()
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {m.name.tag for m in experiment.metric_infos} >= {"summary/acc", "summary/min_acc", "summary/wc_acc"}
    assert session.hparams["strategy"].string_value == "finetune" and session.hparams["seed"].string_value == "0"
    per_task = json.loads((run / "config.json").read_text())["run"]["iterations"]
    assert session.hparams["run.iterations"].number_value == per_task and per_task * 5 == summary["iterations"]


def test_mlflow_holds_the_runs_curves_params_and_metrics(logged):
    import mlflow

    out, run, curves, summary = logged
    client = mlflow.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (mlrun,) = client.search_runs([client.get_experiment_by_name(out.name).experiment_id])
    assert mlrun.info.run_name == "split-digits/finetune/seed0" and mlrun.info.status == "FINISHED"
    # the same metric names as TensorBoard's, and tags to filter runs by
    history = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "accuracy/task0")}
    assert history == pytest.approx(_task0(curves))
    assert mlrun.data.metrics["summary/acc"] == pytest.approx(summary["acc"])
    assert mlrun.data.params["run.strategy"] == "finetune" and mlrun.data.params["run.seed"] == "0"
    assert {k: mlrun.data.tags[k] for k in ("scenario", "strategy", "seed")} == {
        "scenario": "split-digits", "strategy": "finetune", "seed": "0"}


def test_wandb_writes_an_offline_run(logged):
    out, *_ = logged
    (offline,) = (out / "wandb").glob("offline-run-*")
    assert next(offline.glob("run-*.wandb")).stat().st_size > 1000


def test_wandb_receives_the_runs_values(logged, monkeypatch):
    """W&B's offline file is only readable by its own service, so the calls are checked here."""
    import wandb

    out, run, curves, summary = logged
    calls = {"log": {}, "summary": {}, "init": {}}

    class Run:
        summary = calls["summary"]

        def log(self, values, step):
            calls["log"][step] = values

        def finish(self):
            calls["finished"] = True

    monkeypatch.setattr(wandb, "init", lambda **kw: calls["init"].update(kw) or Run())
    loggers.log_wandb(out, run)
    assert {s: v["accuracy/task0"] for s, v in calls["log"].items()} == pytest.approx(_task0(curves))
    assert calls["summary"]["acc"] == pytest.approx(summary["acc"]) and calls["finished"]
    assert calls["init"]["mode"] == "offline" and calls["init"]["config"]["run.strategy"] == "finetune"


def test_an_unknown_tracker_is_one_line(capsys, tmp_path):
    assert entry(["run", *TINY, "--out", str(tmp_path / "o"), "--log", "neptune"]) == 2
    assert "unknown --log 'neptune'; choose from tensorboard, wandb, mlflow" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
