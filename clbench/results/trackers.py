"""Experiment trackers: TensorBoard, Weights & Biases, MLflow (``clbench run --log NAME``).

Each finished run is logged from its run folder (config.json, curves.csv, train.csv,
summary.json) by the process that collects the outcomes, so every executor (this process, the
local pool, Ray) logs the same way and a tracker never changes a run's numbers. Logged per run:
the configuration, the accuracy of every evaluated task and the mean over seen tasks at every
evaluation (step = training iteration), the training loss, and every summary metric.

Files stay under the experiment folder unless the tracker is pointed elsewhere: TensorBoard in
``tensorboard/``, W&B in ``wandb/`` (offline unless ``WANDB_MODE`` says otherwise), MLflow in
``mlruns/`` (unless ``MLFLOW_TRACKING_URI`` is set).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from clbench.common import io
from clbench.common.errors import InputError

#: tracker name -> (module that must import, extra that installs it)
TRACKERS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow")}


def check_trackers(names: list[str]) -> list[str]:
    """The tracker names, each known and importable here (one line otherwise), before anything runs."""
    import importlib

    for name in names:
        if name not in TRACKERS:
            raise InputError(f"unknown --log {name!r}; choose from {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise InputError(f"--log {name} needs its package: pip install 'clbench[{extra}]'") from None
    return names


def run_name(run_dir: Path) -> str:
    """``scenario/strategy/seed<k>`` (the run folder's last three parts)."""
    return "/".join(run_dir.parts[-3:])


def _records(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    config = io.read_json(run_dir / "config.json")
    curves = pd.read_csv(run_dir / "curves.csv")
    train = pd.read_csv(run_dir / "train.csv")
    summary = io.read_json(run_dir / "summary.json")
    return config, curves, train, summary


def _scalars(summary: dict) -> dict[str, float]:
    """The summary's finite numbers (metrics and cost), for a tracker's run summary."""
    return {k: float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def run_tags(summary: dict) -> dict[str, str]:
    """What a run is, as tracker tags to filter by: scenario, strategy, setting, seed (and its
    ordering seed where the experiment varies the ordering)."""
    keys = ("scenario", "strategy", "setting", "seed", "ordering_seed")
    return {k: str(summary[k]) for k in keys if summary.get(k) is not None}


def _evaluations(curves: pd.DataFrame):
    """Per evaluation: (iteration, {task<k>: accuracy, ..., seen_mean: mean over trained tasks})."""
    for _, g in curves.groupby("eval_step", sort=True):
        it = int(g["iteration"].iloc[0])
        trained = int(g["trained_task"].max())
        values = {f"accuracy/task{int(t)}": float(a) for t, a in zip(g["task"], g["accuracy"])}
        seen = g[g["task"] <= max(trained, 0)]["accuracy"]
        if len(seen):
            values["accuracy/seen_mean"] = float(seen.mean())
        yield it, values


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, default=str)
    return out


def log_tensorboard(root: Path, run_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    config, curves, train, summary = _records(run_dir)
    with SummaryWriter(log_dir=str(root / "tensorboard" / run_name(run_dir))) as w:
        w.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```")
        for it, values in _evaluations(curves):
            for k, v in values.items():
                w.add_scalar(k, v, it)
        for it, loss in zip(train["iteration"], train["loss"]):
            w.add_scalar("train/loss", float(loss), int(it))
        scalars = _scalars(summary)
        for k, v in scalars.items():
            w.add_scalar(f"summary/{k}", v, int(summary.get("iterations", 0)))
        _hparams(w, config, summary, scalars)


#: the summary metrics TensorBoard's HParams view sets against the runs' settings
HPARAM_METRICS = ("acc", "min_acc", "wc_acc", "bwt", "forgetting", "wf10", "gap_depth", "train_flops")


def _hparams(writer, config: dict, summary: dict, scalars: dict[str, float]) -> None:
    """Fill TensorBoard's HParams view: one session per run with its tags and settings (strings,
    numbers, booleans) as hyperparameters and the summary metrics already logged (``summary/<name>``)
    as its metrics. Written as the plugin's records only, so no metric is logged twice."""
    from torch.utils.tensorboard.summary import hparams

    values = {**{f"run.{k}": v for k, v in _flat(config.get("run", {})).items()
                 if isinstance(v, (int, float, str, bool))}, **run_tags(summary)}
    metrics = {f"summary/{m}": scalars[m] for m in HPARAM_METRICS if m in scalars}
    if not metrics:
        return
    for record in hparams(values, metrics):
        writer.file_writer.add_summary(record)


def log_wandb(root: Path, run_dir: Path) -> None:
    import wandb

    config, curves, train, summary = _records(run_dir)
    (root / "wandb").mkdir(exist_ok=True)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "clbench"), name=run_name(run_dir),
                     group=root.name, dir=str(root), config=_flat(config), reinit="create_new",
                     tags=[f"{k}:{v}" for k, v in run_tags(summary).items()],
                     mode=os.environ.get("WANDB_MODE", "offline"), settings=wandb.Settings(silent=True))
    try:
        losses = dict(zip(train["iteration"].astype(int), train["loss"].astype(float)))
        for it, values in _evaluations(curves):
            run.log({**values, **({"train/loss": losses[it]} if it in losses else {})}, step=it)
        run.summary.update(_scalars(summary))
    finally:
        run.finish()


def log_mlflow(root: Path, run_dir: Path) -> None:
    import mlflow

    config, curves, train, summary = _records(run_dir)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # a folder beside the runs (MLflow 3 wants an opt-in for its file store; a database needs more)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (root / "mlruns").resolve().as_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    name = root.name
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=run_name(run_dir))
    rid = run.info.run_id
    try:
        params = {k[:250]: str(v)[:500] for k, v in _flat(config).items()}
        client.log_batch(rid, params=[mlflow.entities.Param(k, v) for k, v in params.items()],
                         tags=[mlflow.entities.RunTag(k, v) for k, v in run_tags(summary).items()])
        ts = 0
        # the same names as TensorBoard's and W&B's (MLflow takes "/" in a key)
        metrics = [mlflow.entities.Metric(k, v, ts, it)
                   for it, values in _evaluations(curves) for k, v in values.items()]
        metrics += [mlflow.entities.Metric("train/loss", float(v), ts, int(i))
                    for i, v in zip(train["iteration"], train["loss"])]
        metrics += [mlflow.entities.Metric(f"summary/{k}", v, ts, 0) for k, v in _scalars(summary).items()]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(rid, metrics=metrics[start:start + 1000])
        client.log_artifact(rid, str(run_dir / "curves.csv"))
        client.set_terminated(rid)
    except BaseException:
        client.set_terminated(rid, status="FAILED")
        raise


LOGGERS: dict[str, Callable[[Path, Path], None]] = {"tensorboard": log_tensorboard, "wandb": log_wandb,
                                                    "mlflow": log_mlflow}


def log_run(names: list[str], root: Path, run_dir: Path) -> list[str]:
    """Log one finished run to every tracker named; returns one line per tracker that failed (a
    tracker's trouble must not fail the run, whose folder is already complete)."""
    problems = []
    for name in names:
        try:
            LOGGERS[name](root, run_dir)
        except Exception as e:  # noqa: BLE001 - reported, the experiment goes on
            problems.append(f"--log {name} could not log {run_name(run_dir)}: {type(e).__name__}: {e}")
    return problems
