"""clbench's own training loop: the shared stream, one ``observe`` per batch, evaluation as the
schedule asks. Avalanche's strategies run in theirs (``clbench.run.avalanche_loop``)."""

from __future__ import annotations

import time

import numpy as np
import torch

from clbench import scenarios
from clbench.evaluation.cost import CostMeter
from clbench.evaluation.driver import Evaluations
from clbench.run.parts import build_model_and_optimizer, make_evaluator, scenario_seed, schedule_for
from clbench.run.record import Trained, run_cost, strategy_label
from clbench.run.resolve import ResolvedRun
from clbench.scenarios.orderings import make_stream


def train_clbench(run: ResolvedRun, scenario: scenarios.Scenario, device: torch.device, progress=None,
                  check_only: bool = False) -> Trained | None:
    """Train ``run`` along its stream. ``check_only``: build everything the loop uses, then stop before
    the first update."""
    config = run.config
    model = optimizer = None
    if run.entry.uses_model:
        model, optimizer = build_model_and_optimizer(config, scenario, device, build_optimizer=not check_only)
    strategy = run.entry.build(model, optimizer, setting=scenario.setting, task_classes=scenario.task_classes,
                               n_classes=scenario.n_classes, seed=config.seed, augment=config.augment,
                               **run.strategy_params)
    stream = make_stream(scenario, config.ordering, seed=scenario_seed(config), batch_size=config.batch_size,
                         epochs=config.epochs, iterations=config.iterations, views=getattr(strategy, "views", 1),
                         **config.ordering_params)
    evaluator = make_evaluator(config, scenario, device)
    schedule = schedule_for(config, evaluator)
    if check_only:
        return None
    bounds = [(s.start, s.stop) for s in stream.segments]
    meter = CostMeter(bounds)
    batches = stream.on(device)
    n_total = len(stream)
    evaluations = Evaluations(evaluator, schedule, strategy, n_total, progress)
    losses = torch.zeros(n_total, device=device)  # written in place: see clbench.evaluation.rowlog
    train_seconds = np.zeros(n_total)
    tasks = stream.tasks or scenario.tasks
    seen = 0

    strategy.before_stream(scenario)
    evaluations.evaluate(0, evaluator.n_tasks, seen, -1)
    for seg in stream.segments:
        seen = max(seen, seg.task + 1)
        task = tasks[seg.task]
        strategy.before_segment(seg.stop - seg.start)
        strategy.before_task(task)
        schedule.begin_segment(seg.start, seg.stop)
        for it in range(seg.start, seg.stop):
            t0 = time.perf_counter()
            x, y, task_ids = batches.batch(it)
            losses[it] = meter.step(it, lambda: strategy.observe(x, y, task_ids)).detach()  # noqa: B023
            if it + 1 == seg.stop:  # strategies consolidate a task once, at its first end
                meter.hook(lambda: strategy.after_task(task))  # noqa: B023
            train_seconds[it] = time.perf_counter() - t0
            evaluations.updated(it + 1)
            if it + 1 == seg.stop:
                evaluations.evaluate(it + 1, evaluator.n_tasks, seen, seg.task)
            else:
                evaluations.between(it + 1, seen, seg.task)
    loss_values = losses.cpu().numpy()
    return Trained(evaluator, loss_values, stream.task_of_iteration.numpy(), train_seconds, evaluations.seconds,
                   strategy.config(), {**stream.meta, "iterations_total": n_total},
                   run_cost(meter, scenario, strategy, strategy.model, optimizer,
                            strategy_label(config.strategy, strategy), own_samples=strategy.memory_samples()),
                   schedule.config())
