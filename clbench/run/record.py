"""What a run leaves behind: the training loops hand back a ``Trained``; ``summarize`` and ``record``
turn it into summary.json and config.json, and ``write_run`` writes the run folder atomically."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clbench import scenarios
from clbench.common import io
from clbench.common.provenance import provenance
from clbench.evaluation import metrics
from clbench.evaluation.cost import CostMeter, trainable_parameters
from clbench.evaluation.evaluator import Evaluator
from clbench.evaluation.held import as_summary, held_by
from clbench.run.resolve import ResolvedRun


@dataclass
class Trained:
    """What a training loop hands back to the runner: the evaluations and the per-iteration record."""

    evaluator: Evaluator
    losses: np.ndarray
    task_of_iteration: np.ndarray
    train_seconds: np.ndarray
    eval_seconds: float
    strategy_config: dict
    stream_meta: dict
    #: training FLOPs, memory held, trainable parameters (``clbench.evaluation.cost``)
    cost: dict
    #: the evaluation schedule's rule and constants (``Schedule.config``)
    schedule: dict = field(default_factory=lambda: {"kind": "periodic"})

    def log(self) -> pd.DataFrame:
        return pd.DataFrame(self.evaluator.log_rows(), columns=metrics.LOG_COLUMNS)

    def train_table(self) -> pd.DataFrame:
        n = len(self.losses)
        return pd.DataFrame({"iteration": np.arange(1, n + 1), "task": self.task_of_iteration, "loss": self.losses,
                             "seconds": np.cumsum(self.train_seconds)})


def strategy_label(name: str, strategy) -> str:
    """A strategy's name in the leaderboard and plots: its ``--strategy`` name, or for a class of
    the user's own (an import path) the ``name`` the class sets itself, so that ``mystrats:LwF``
    reads ``lwf``; and the strategy's suffix (``nmc[pixels]``)."""
    own = type(strategy).__dict__.get("name") if ":" in name else None
    return (own if isinstance(own, str) and own else name) + strategy.label_suffix()


def run_cost(meter: CostMeter, scenario: scenarios.Scenario, strategy, model, optimizer, label: str, *,
             skip: tuple = (), own_samples: int | None = None) -> dict:
    """The cost fields of a run's summary (and the strategy's leaderboard label), both training
    loops alike: memory as the runner measures it at the end (``clbench.evaluation.held``, beyond
    ``model``, ``optimizer`` and the scenario's data; None where it cannot), ``skip`` the loop's own
    objects the strategy references, ``own_samples`` the strategy's count of its samples."""
    data = [t for task in scenario.tasks for split in (task.train, task.test, task.val) if split is not None
            for t in (split.x, split.y)]
    held = held_by(strategy, model=model, optimizer=optimizer, data=data, input_shape=scenario.input_shape,
                   skip=skip, own_samples=own_samples)
    return {"train_flops": meter.train_flops(), **as_summary(held),
            "trainable_params": trainable_parameters(model), "label": label, "flop_counting": meter.record()}


def summarize(run: ResolvedRun, scenario: scenarios.Scenario, trained: Trained, log: pd.DataFrame,
              wall_seconds: float) -> dict:
    """summary.json: the metrics, cost, budget and what the run was."""
    config = run.config
    n_total = len(trained.losses)
    train_s = float(trained.train_seconds.sum())
    cost = {k: v for k, v in trained.cost.items() if k != "flop_counting"}
    chance = metrics.chance_levels(scenario.setting, scenario.n_classes, scenario.task_classes)
    log = metrics.as_log(log)  # pivoted once for the metrics, the divergence rule and the coverage
    at, why = metrics.divergence(trained.losses, trained.task_of_iteration, log, chance)
    return {**metrics.summarize(log), "n_tasks": len(scenario.tasks), "iterations": n_total,
            "n_evaluations": trained.evaluator.n_steps(), "wall_seconds": wall_seconds,
            # every task at every iteration of its curve (the reference), or a schedule's subset
            "evaluated_every_iteration": metrics.evaluated_every_iteration(log),
            "train_seconds": train_s, "eval_seconds": trained.eval_seconds,
            "train_iters_per_second": n_total / max(train_s, 1e-9),
            # the first iteration at which training diverged (``metrics.divergence``), or None; and why
            "diverged_at": at, "divergence": why,
            # view-batch: the updates its self-supervised term acted in (0: never; None: no such term)
            "ssl_updates": trained.strategy_config.get("ssl_updates"),
            **cost, **run.budget, "memory_capacity": trained.strategy_config.get("memory_capacity"),
            "eval_on": config.eval_on, "augment": config.augment,
            "scenario": scenario.name, "setting": scenario.setting, "strategy": config.strategy,
            "seed": config.seed, "ordering": config.ordering, "ordering_seed": config.ordering_seed,
            "params": config.params}


def record(run: ResolvedRun, scenario: scenarios.Scenario, trained: Trained) -> dict:
    """config.json: the run as asked and every choice that changes the numbers."""
    config, evaluator = run.config, trained.evaluator
    return {
        "run": config.to_dict(),
        "scenario": {"name": scenario.name, "setting": scenario.setting, "n_tasks": len(scenario.tasks),
                     "n_classes": scenario.n_classes, "class_order": scenario.class_order,
                     "task_classes": scenario.task_classes,
                     **{k: v for k, v in scenario.meta.items() if k not in ("class_names",)}},
        "strategy": trained.strategy_config,
        "stream": trained.stream_meta,
        "evaluation": {"on": config.eval_on, "every": config.eval_every, "subset": config.eval_subset,
                       "schedule": trained.schedule,
                       "subsets": "resampled every evaluation" if config.eval_resample else "fixed, seeded",
                       "dense_after_switch": config.dense_after_switch, "when": "after the update",
                       "precision": config.eval_precision,
                       "samples_per_task": [evaluator.offsets[t + 1] - evaluator.offsets[t]
                                            for t in range(evaluator.n_tasks)]},
        "versions": {**provenance(), "torch": torch.__version__, "python": platform.python_version(),
                     "numpy": np.__version__},
        "cost": trained.cost["flop_counting"],
    }


def write_run(out: Path, config_record: dict, log: pd.DataFrame, train: pd.DataFrame, summary: dict) -> None:
    """Fill a staging folder, then rename it into place: a run folder is complete or absent."""
    staging = io.staging_dir(out)
    try:
        io.write_json(staging / "config.json", config_record)
        io.write_csv(staging / "curves.csv", log)
        R = metrics.accuracy_matrix(log)
        matrix = pd.DataFrame(R, columns=[f"task{j}" for j in range(R.shape[1])])
        matrix.insert(0, "after_task", range(R.shape[0]))
        io.write_csv(staging / "matrix.csv", matrix)
        io.write_csv(staging / "train.csv", train)
        io.write_json(staging / "summary.json", summary)
        io.commit_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
