"""Avalanche interop, both ways.

- ``to_avalanche(scenario)``: an Avalanche benchmark with the same tasks, class order and test
  sets (normalised tensors; task labels = task ids in task-il, 0 otherwise).
- What clbench knows about Avalanche's strategies (names, parameters, how each spends a memory
  budget, what it holds): the catalog (``clbench.run.catalog``) reads it, and the Avalanche
  training loop (``clbench.run.avalanche_loop``) runs them with clbench's evaluator plugged in.
- ``ContinualEvaluationPlugin``: clbench's evaluator as an Avalanche plugin for people who keep
  their Avalanche loop. It evaluates the model directly on the preloaded tensors; it never calls
  ``strategy.eval()``, which would rebuild data loaders and evaluate whole streams.

``import avalanche`` patches ``torch.utils.data.Dataset.__add__``, so it is imported here only,
inside the functions that need it.
"""

from __future__ import annotations

import inspect
import time
import warnings
from typing import Any

import torch

from clbench.common.errors import InputError
from clbench.scenarios.data import Scenario

#: the Avalanche strategies that fit clbench's loop. ICaRL does not: its nearest-mean-of-exemplars
#: classifier exists only after the first experience, so it cannot be evaluated from iteration 0.
STRATEGIES = ("Naive", "EWC", "GEM", "Replay", "LwF", "SynapticIntelligence", "AGEM", "ER_ACE", "DER", "GDumb")
#: arguments the runner sets itself
_RUNNER_ARGS = {"self", "model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
                "plugins", "evaluator", "eval_every", "peval_mode", "kwargs", "args", "base_kwargs"}


def _training():
    try:
        import avalanche.training as training
    except ImportError:
        raise InputError("Avalanche strategies need avalanche-lib: pip install avalanche-lib==0.6.0") from None
    return training


def check_strategy_name(name: str) -> None:
    if name not in STRATEGIES:
        raise InputError(f"unknown Avalanche strategy {name!r}; supported: {', '.join(STRATEGIES)}")


#: how each Avalanche strategy with a memory spends a budget of N samples: all of it, or N // T per experience
_MEMORY = {"Replay": ("mem_size", "total"), "ER_ACE": ("mem_size", "total"), "DER": ("mem_size", "total"),
           "GDumb": ("mem_size", "total"), "GEM": ("patterns_per_exp", "per_task"),
           "AGEM": ("patterns_per_exp", "per_task")}


def memory_params(name: str, budget: int, n_tasks: int) -> dict[str, Any]:
    check_strategy_name(name)
    if name not in _MEMORY:
        return {}
    param, how = _MEMORY[name]
    value = int(budget) if how == "total" else int(budget) // max(1, int(n_tasks))
    if value < 1:
        raise InputError(f"a memory of {budget} samples leaves avalanche:{name} less than one sample per experience")
    return {param: value}


def required_params(name: str) -> list[str]:
    """The Avalanche strategy's keyword parameters without a default (LwF's ``alpha`` and
    ``temperature``, EWC's ``ewc_lambda``): asked for before the run starts, in one line."""
    check_strategy_name(name)
    cls = getattr(_training(), name)
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in _RUNNER_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.default is inspect.Parameter.empty]


def strategy_params(name: str) -> dict[str, Any]:
    """The Avalanche strategy's own keyword parameters and defaults (None where it has none)."""
    check_strategy_name(name)
    cls = getattr(_training(), name)
    out = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in _RUNNER_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return out


# ---------------------------------------------------------------- benchmark

def _dataset(data, task_id: int):
    from avalanche.benchmarks.utils import DataAttribute
    from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset

    x, y = data.batch()
    base = torch.utils.data.TensorDataset(x, y)
    return TaskAwareSupervisedClassificationDataset([base], data_attributes=[
        DataAttribute(y.tolist(), "targets"),
        DataAttribute([task_id] * len(y), "targets_task_labels", use_in_getitem=True)])


def to_avalanche(scenario: Scenario):
    """An Avalanche benchmark (``train_stream``, ``test_stream``) with exactly the scenario's tasks."""
    _training()
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    tid = (lambda t: t.id) if scenario.setting == "task-il" else (lambda t: 0)  # noqa: E731
    bm = benchmark_from_datasets(train=[_dataset(t.train, tid(t)) for t in scenario.tasks],
                                 test=[_dataset(t.test, tid(t)) for t in scenario.tasks])
    return with_task_labels(bm)


# ---------------------------------------------------------------- the plugin

class _ModelView:
    """What clbench's evaluator needs from a strategy: the model and masked logits."""

    def __init__(self, model, setting: str, task_classes: list[list[int]], n_classes: int):
        from clbench.strategies.base import Strategy

        self.model = model
        self._masker = Strategy(model, setting=setting, task_classes=task_classes, n_classes=n_classes)

    def predict(self, x, task_ids=None):
        from avalanche.models.utils import avalanche_forward

        tl = task_ids if self._masker.setting == "task-il" else torch.zeros(len(x), dtype=torch.long, device=x.device)
        return self._masker.mask_logits(avalanche_forward(self.model, x, tl), task_ids)


def _plugin_base():
    from avalanche.core import SupervisedPlugin

    return SupervisedPlugin


class ContinualEvaluationPlugin:
    """Per-iteration continual evaluation inside an Avalanche training loop.

    Evaluates before the first update (every task), at every experience end (every task) and in
    between as the named schedule asks (``clbench.evaluation.schedules``: ``periodic``, every
    ``eval_every`` iterations plus ``dense_after_switch`` after each switch; ``refine``, coarse
    evaluation with looks back at the exact iterations the metrics need), exactly like clbench's
    runner, on the fixed subsets of clbench's ``Evaluator``. ``log()`` gives the accuracy log;
    ``summary()`` the metrics. Construct it with ``ContinualEvaluationPlugin.create(scenario, ...)``
    (the Avalanche base class is resolved at call time so that importing clbench does not import
    Avalanche).
    """

    @staticmethod
    def create(scenario: Scenario, *, eval_every: int | None = 1, eval_subset: int | str = 1000,
               eval_resample: bool = False, dense_after_switch: int = 0, seed: int = 0, device="cpu",
               precision: str = "fp32", progress=None, split: str = "test", meter=None,
               schedule: str = "periodic"):
        from clbench.evaluation.driver import Evaluations
        from clbench.evaluation.evaluator import Evaluator, subset_size
        from clbench.evaluation.rowlog import RowLog
        from clbench.evaluation.schedules import make_schedule

        base = _plugin_base()

        class _Plugin(base):
            def __init__(self):
                super().__init__()
                self.scenario = scenario
                self.evaluator = Evaluator(scenario, subset=subset_size(eval_subset), resample=eval_resample,
                                           seed=seed, device=device, precision=precision, split=split)
                sizes = [b - a for a, b in zip(self.evaluator.offsets, self.evaluator.offsets[1:])]
                self.schedule = make_schedule(schedule, eval_every, dense_after_switch, sizes)
                #: a clbench.evaluation.cost.CostMeter counting the FLOPs of sampled iterations (optional)
                self.meter = meter
                self.driver: Evaluations | None = None
                self.iteration = 0
                self.stop = 0
                self.phase = -1
                self.current = 0
                #: one loss per iteration, in place on the device (``clbench.evaluation.rowlog``)
                self.losses = RowLog(1, device, torch.float32)
                self.tasks: list[int] = []
                self.iter_seconds: list[float] = []
                self._t0 = 0.0
                self.progress = progress

            @property
            def eval_seconds(self) -> float:
                return self.driver.seconds if self.driver is not None else 0.0

            def before_training_exp(self, strategy, **kwargs):
                if self.meter is not None:
                    self.meter.hook_stop()
                if self.driver is None or self.driver.strategy.model is not strategy.model:
                    view = _ModelView(strategy.model, scenario.setting, scenario.task_classes, scenario.n_classes)
                    seconds = self.eval_seconds
                    self.driver = Evaluations(self.evaluator, self.schedule, view, progress=self.progress)
                    self.driver.seconds = seconds
                self.current = strategy.experience.current_experience
                if not self.evaluator.history:
                    self.driver.evaluate(0, self.evaluator.n_tasks, 0, -1)
                self.phase = max(self.phase, self.current)
                self.stop = self.iteration + len(strategy.dataloader) * strategy.train_epochs
                self.schedule.begin_segment(self.iteration, self.stop)

            def before_training_iteration(self, strategy, **kwargs):
                self._t0 = time.perf_counter()
                if self.meter is not None:
                    self.meter.start(self.iteration)

            def after_training_iteration(self, strategy, **kwargs):
                if self.meter is not None:
                    self.meter.stop()
                self.iteration += 1
                self.losses.add(strategy.loss.detach().float())
                self.tasks.append(self.current)
                self.iter_seconds.append(time.perf_counter() - self._t0)
                self.driver.updated(self.iteration)
                if self.iteration != self.stop:  # the experience's end is evaluated in after_training_exp
                    self.driver.between(self.iteration, self.phase + 1, self.current)
                elif self.meter is not None:  # the plugins' consolidation (EWC's importances, ...) follows
                    self.meter.hook_start()

            def after_training_exp(self, strategy, **kwargs):
                if self.meter is not None:  # the evaluation is not training: out of the count
                    self.meter.hook_stop()
                self.driver.evaluate(self.iteration, self.evaluator.n_tasks, self.phase + 1, self.current)
                if self.meter is not None:  # plugins after this one consolidate too
                    self.meter.hook_start()

            def after_training(self, strategy, **kwargs):
                if self.meter is not None:
                    self.meter.hook_stop()

            def log(self):
                import pandas as pd

                from clbench.evaluation import metrics

                return pd.DataFrame(self.evaluator.log_rows(), columns=metrics.LOG_COLUMNS)

            def summary(self) -> dict:
                from clbench.evaluation import metrics

                return metrics.summarize(self.log())

        return _Plugin()


# ---------------------------------------------------------------- running an Avalanche strategy

def patch_synaptic_intelligence() -> None:
    """Make Avalanche 0.6's Synaptic Intelligence work on the CPU (Zenke et al., ICML 2017).

    Its plugin stores the weights before and after each update and the gradient as
    ``param.detach().cpu().flatten()``: on a GPU that is a copy, on the CPU a *view of the live
    parameter*. "Before" and "after" are then the same tensor, every update's contribution
    ``grad * (new - old)`` to the path integral is 0, the importances are 0 and SI trains exactly
    as Naive does (byte-identical curves, at any ``si_lambda``). The patch stores copies, which is
    what the code means on every device; nothing else of the plugin changes. Applied once per
    process, to the plugin class, when clbench builds an SI strategy."""
    from avalanche.training.plugins import SynapticIntelligencePlugin as SI

    if getattr(SI, "clbench_patched", False):
        return

    @torch.no_grad()
    def extract_weights(model, target, excluded_parameters):
        for name, param in SI.allowed_parameters(model, excluded_parameters):
            target[name].data = param.detach().flatten().to("cpu", copy=True)

    @torch.no_grad()
    def extract_grad(model, target, excluded_parameters):
        for name, param in SI.allowed_parameters(model, excluded_parameters):
            target[name].data = param.grad.detach().flatten().to("cpu", copy=True)

    SI.extract_weights, SI.extract_grad = staticmethod(extract_weights), staticmethod(extract_grad)
    SI.clbench_patched = True


def make_strategy(name: str, model, optimizer, *, batch_size: int, epochs: int, device, plugins, params,
                  evaluator=None, **template):
    """An Avalanche strategy on clbench's model and optimiser, silent (no default loggers) unless an
    ``evaluator`` is given; ``template`` passes further template arguments (``eval_every``, ...)."""
    training = _training()
    from avalanche.training.plugins import EvaluationPlugin

    check_strategy_name(name)
    cls = getattr(training, name)
    if name == "SynapticIntelligence":
        patch_synaptic_intelligence()
    if evaluator is None:
        with warnings.catch_warnings():  # "no loggers": on purpose, clbench's plugin does the evaluation
            warnings.simplefilter("ignore")
            evaluator = EvaluationPlugin(loggers=[])
    common = dict(train_mb_size=batch_size, train_epochs=epochs, eval_mb_size=1024, device=device, plugins=plugins,
                  evaluator=evaluator, **template)
    try:
        return cls(model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), **common, **params)
    except TypeError as e:
        raise InputError(f"avalanche:{name}: {e}") from None


def capacity(name: str, params: dict, n_tasks: int) -> int | None:
    """Samples an Avalanche strategy may hold, from the parameter that sets its memory."""
    if name not in _MEMORY:
        return None
    param, how = _MEMORY[name]
    value = params.get(param)
    if value is None:
        return None
    return int(value) if how == "total" else int(value) * n_tasks
