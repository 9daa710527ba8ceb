"""Avalanche's training loop, beside clbench's own (``clbench.run.loop``): an Avalanche strategy
(``--strategy avalanche:EWC``) trained by Avalanche on the run's model, optimiser, batch size, epochs
and evaluation subsets, with clbench's evaluator plugged in, so it gets per-iteration evaluation and
the stability-gap metrics too."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from clbench import scenarios
from clbench.common.errors import InputError
from clbench.evaluation.cost import CostMeter
from clbench.interop.avalanche import ContinualEvaluationPlugin, capacity, make_strategy, to_avalanche
from clbench.run.parts import build_model_and_optimizer
from clbench.run.record import Trained, run_cost
from clbench.run.resolve import ResolvedRun


def check_settings(run: ResolvedRun) -> None:
    """What Avalanche's loop cannot do, said in one line each."""
    config = run.config
    if config.eval_schedule == "adaptive":
        raise InputError(f"{config.strategy} trains in Avalanche's loop, where clbench does not probe: "
                         f"--eval-schedule adaptive runs clbench's strategies only (periodic and refine run both)")
    if config.augment != "none":
        raise InputError(f"avalanche:* strategies train on clbench's tensors without augmentation; "
                         f"use --augment none (this experiment asks for {config.augment!r})")
    if config.iterations is not None or config.epochs is None or config.epochs != int(config.epochs):
        raise InputError("Avalanche strategies train whole epochs: give --epochs N (not --iterations)")
    if config.ordering != "sequential":
        raise InputError("Avalanche strategies run on sequential streams only")


def train_avalanche(run: ResolvedRun, scenario: scenarios.Scenario, device: torch.device, progress=None,
                    check_only: bool = False) -> Trained | None:
    """Train ``run`` in Avalanche's loop (``check_only``: build it, stop before the first update)."""
    check_settings(run)
    config, params = run.config, run.strategy_params
    name = run.entry.avalanche_name
    model, optimizer = build_model_and_optimizer(config, scenario, device)
    per_exp = [int(config.epochs) * math.ceil(len(t.train) / config.batch_size) for t in scenario.tasks]
    ends = np.cumsum(per_exp).tolist()
    meter = CostMeter([(int(e - n), int(e)) for e, n in zip(ends, per_exp)])
    plugin = ContinualEvaluationPlugin.create(scenario, eval_every=config.eval_every, eval_subset=config.eval_subset,
                                              eval_resample=config.eval_resample,
                                              dense_after_switch=config.dense_after_switch, seed=config.seed,
                                              device=device, precision=config.eval_precision, progress=progress,
                                              split=config.eval_on, meter=meter, schedule=config.eval_schedule)
    torch.manual_seed(config.seed)
    strategy = make_strategy(name, model, optimizer, batch_size=config.batch_size, epochs=int(config.epochs),
                             device=device, plugins=[plugin], params=params)
    if check_only:
        return None
    bm = to_avalanche(scenario)
    # Avalanche 0.6 resets the warning filters inside its own deprecated calls, so its
    # DeprecationWarnings are recorded here (and dropped) rather than filtered
    with warnings.catch_warnings(record=True):
        for exp in bm.train_stream:
            strategy.train(exp, num_workers=0)
    losses = plugin.losses.rows()[:, 0].numpy()
    held_capacity = capacity(name, params, len(scenario.tasks))
    cost = run_cost(meter, scenario, strategy, model, optimizer, config.strategy, skip=(plugin,))
    return Trained(plugin.evaluator, losses, np.array(plugin.tasks), np.array(plugin.iter_seconds),
                   plugin.eval_seconds, {"name": config.strategy, "library": "avalanche-lib 0.6.0",
                                         "setting": scenario.setting, **params,
                                         **({"memory_capacity": held_capacity} if held_capacity else {})},
                   {"ordering": "avalanche data loaders", "batch_size": config.batch_size,
                    "epochs": config.epochs, "iterations_total": len(losses),
                    "iterations_per_epoch_clbench": [math.ceil(len(t.train) / config.batch_size)
                                                     for t in scenario.tasks]}, cost, plugin.schedule.config())
