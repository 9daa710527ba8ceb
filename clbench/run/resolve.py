"""Resolve once, then run: a run's settings with the scenario's defaults filled in, its strategy looked
up, its parameters checked and the experiment's memory budget spent, all decided here once. The
experiment's checks produce these before anything is written; the workers, the loops and the record
trust them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from clbench.run import catalog
from clbench.run.settings import RunConfig


@dataclass(frozen=True)
class ResolvedRun:
    """A run ready to train: nothing below re-derives any of it."""

    #: every setting final (the scenario's defaults filled in), ``params`` checked and converted: the
    #: parameters as asked, which name the run's row
    config: RunConfig
    #: the parameters the strategy is built with: ``config.params`` plus the memory budget spent the
    #: strategy's own way (ER: ``mem_size = N``; GEM: ``N // T`` per task; ...)
    strategy_params: dict[str, Any]
    #: what the leaderboard must know of the budget: ``memory_budget``, ``uses_memory`` and
    #: ``budget_overridden`` (the budget's parameters the run set itself, off-budget)
    budget: dict[str, Any]

    @property
    def entry(self) -> catalog.Entry:
        return catalog.lookup(self.config.strategy)

    @property
    def loop(self) -> str:
        """The training loop that runs it (``clbench.run.runner.LOOPS``)."""
        return self.entry.loop


def resolve(config: RunConfig, train_defaults: dict[str, Any], n_tasks: int) -> ResolvedRun:
    """``config`` with the scenario's training defaults (``scenario.meta["train"]``) filled in, and its
    parameters checked and budgeted for a stream of ``n_tasks`` tasks. A parameter given explicitly
    wins over the budget, and the run is then marked as off-budget."""
    train = train_defaults
    c = dataclasses.replace(config)
    c.model = c.model or train.get("model", "mlp")
    if not c.model_options and c.model == train.get("model") and "hidden" in train:
        c.model_options = {"hidden": list(train["hidden"])}
    c.optimizer = c.optimizer or train.get("optimizer", "sgd")
    c.lr = c.lr if c.lr is not None else train.get("lr", 0.01)
    c.momentum = c.momentum if c.momentum is not None else train.get("momentum", 0.9)
    c.batch_size = c.batch_size or train.get("batch_size", 32)
    c.memory = c.memory if c.memory is not None else train.get("memory")
    c.augment = c.augment or train.get("augment", "none")
    if c.epochs is None and c.iterations is None:
        c.epochs, c.iterations = train.get("epochs"), train.get("iterations")
    entry = catalog.lookup(c.strategy)
    c.params = entry.coerce(c.params)
    auto = entry.memory_params(c.memory, n_tasks) if c.memory is not None else {}
    overridden = sorted(k for k in auto if k in c.params and c.params[k] != auto[k])
    budget = {"memory_budget": c.memory if auto else None, "uses_memory": bool(auto), "budget_overridden": overridden}
    if isinstance(entry, catalog.AvalancheEntry):
        entry.check_complete({**auto, **c.params})
    return ResolvedRun(c, {**auto, **c.params}, budget)
