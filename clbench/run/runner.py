"""Run one configuration: build the scenario, train the strategy along its stream in the loop its
catalog entry names, evaluate continually, write the run folder. Multi-run experiments
(``clbench.sweep.experiment``) call ``run`` once per (scenario, strategy, seed) with runs they have
resolved once (``clbench.run.resolve``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from clbench import scenarios
from clbench.run.avalanche_loop import train_avalanche
from clbench.run.loop import train_clbench
from clbench.run.parts import build_model_and_optimizer, build_scenario, check_device, threads
from clbench.run.record import Trained, record, summarize, write_run
from clbench.run.resolve import ResolvedRun, resolve
from clbench.run.settings import RunConfig, validated

#: the training loops, by the name a catalog entry gives (``entry.loop``)
LOOPS: dict[str, Callable[..., Trained | None]] = {"clbench": train_clbench, "avalanche": train_avalanche}


@dataclass
class RunResult:
    config: RunConfig
    log: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path | None


def resolve_for(config: RunConfig, scenario: scenarios.Scenario) -> ResolvedRun:
    """``config`` resolved against the scenario it runs on."""
    return resolve(config, scenario.meta.get("train", {}), len(scenario.tasks))


def check_run(run: ResolvedRun, scenario: scenarios.Scenario) -> None:
    """Everything ``run`` does before its first update (model, optimiser, strategy and its budget,
    stream, evaluator, schedule), without training: an experiment checks each of its scenario x
    strategy pairs this way before it writes anything."""
    device = check_device(run.config.device)
    with threads(run.config.threads):
        if not run.entry.uses_model:
            # the experiment's model settings are shared by all its strategies: a bad model name
            # or option is an error even in a table whose only strategy ignores the model (NMC)
            build_model_and_optimizer(run.config, scenario, torch.device("cpu"), build_optimizer=False)
        LOOPS[run.loop](run, scenario, device, check_only=True)


def run(config: RunConfig | ResolvedRun, out_dir: str | Path | None = None, progress=None) -> RunResult:
    """Train and evaluate one configuration; write the run folder atomically when ``out_dir`` is set.

    ``config`` is a ``ResolvedRun`` (an experiment's, checked once) or a plain ``RunConfig`` (checked
    and resolved here). ``progress`` (optional) is called as ``progress(iteration, total, task,
    evaluation)`` after each evaluation. The run uses ``config.threads`` CPU threads whatever process
    runs it, so its numbers do not depend on the executor.
    """
    t_start = time.perf_counter()
    plain = validated(RunConfig, dataclasses.asdict(config), "run") if isinstance(config, RunConfig) else config.config
    device = check_device(plain.device)
    with threads(plain.threads):
        scenario = build_scenario(plain)
        resolved = config if isinstance(config, ResolvedRun) else resolve_for(plain, scenario)
        trained = LOOPS[resolved.loop](resolved, scenario, device, progress)
        log = trained.log()
        summary = summarize(resolved, scenario, trained, log, time.perf_counter() - t_start)
        out = None
        if out_dir is not None:
            out = Path(out_dir)
            write_run(out, record(resolved, scenario, trained), log, trained.train_table(), summary)
    return RunResult(resolved.config, log, summary, out)
