"""Run one configuration: build the scenario and stream, train the strategy along it,
evaluate continually, write the run folder. Multi-run experiments call ``run`` once per
(scenario, strategy, seed)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

import scenarios
from clbench import io, metrics
from clbench.catalog import coerce_params, is_avalanche, strategy_entry
from clbench.cost import CostMeter, trainable_parameters
from clbench.evaluator import AdaptiveSchedule, Evaluator, Schedule, subset_size
from clbench.provenance import provenance
from scenarios.errors import InputError
from scenarios.orderings import make_stream
from scenarios.validation import Count, NonNegativeInt, Positive, describe
from strategies import build_model, create
from strategies.augment import Family

# Types and ranges of the settings, declared next to each field below and checked by pydantic
# (``validated``) before anything runs.
#: a finite share in [0, 1) (momentum, the validation fraction)
Share = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


def _eval_subset(value: int | str) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise ValueError("must be a number of samples per task (at least 1) or 'all'")
    return n


EvalSubset = Annotated[int | str, BeforeValidator(_eval_subset)]


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    """Built once per class: building the schema costs far more than checking a value."""
    return TypeAdapter(cls)


def validated(cls: type, values: dict[str, Any], what: str):
    """``cls(**values)`` with every field's declared type and range checked (one line on error)."""
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as e:
        raise InputError(describe(e, what)) from None


@dataclass
class RunSettings:
    """How runs train and evaluate, shared by every run of an experiment. ``None`` means "the
    scenario's default"."""

    scenario_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    optimizer: Literal["sgd", "adam"] | None = None
    lr: Positive | None = None
    momentum: Share | None = None
    batch_size: Count | None = None
    epochs: Positive | None = None
    iterations: Count | None = None
    eval_every: Count | None = 1
    #: "periodic": every ``eval_every`` iterations (plus ``dense_after_switch``); "adaptive": every
    #: iteration while old tasks' accuracy moves, sparse (``eval_every`` if above 1, else 50) where
    #: it does not (``evaluator.AdaptiveSchedule``)
    eval_schedule: Literal["periodic", "adaptive"] = "periodic"
    #: evaluation samples per task, or "all"
    eval_subset: EvalSubset = 1000
    eval_resample: bool = False
    eval_precision: Literal["fp32", "bf16"] = "fp32"
    dense_after_switch: NonNegativeInt = 0
    ordering: str = "sequential"
    ordering_params: dict[str, Any] = field(default_factory=dict)
    #: memory budget in samples, the same for every memory-using strategy (None: the scenario's default)
    memory: NonNegativeInt | None = None
    #: training augmentation family of every strategy: none, weak, standard (None: the scenario's default)
    augment: Family | None = None
    #: share of every class's training samples held out for validation (never trained on)
    val_fraction: Share = 0.1
    #: what the continual evaluation measures: "test" or "val" (choose hyperparameters on val only)
    eval_on: Literal["test", "val"] = "test"
    #: CPU threads of the run's own process (torch intra-op): fixed per run and recorded, because the
    #: reduction order, hence the last bits of every float, depends on it; so ``--jobs 1``, ``--jobs N``
    #: and Ray give byte-identical curves
    threads: Count = 1
    device: str = "cpu"
    data_root: str | None = None

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)}


@dataclass
class RunConfig(RunSettings):
    """Everything that determines a run's numbers: the shared settings plus what makes this run."""

    scenario: str = "split-digits"
    strategy: str = "finetune"
    seed: NonNegativeInt = 0
    params: dict[str, Any] = field(default_factory=dict)
    #: seed of the scenario (class order, permutations) and the stream; None: the run's seed
    ordering_seed: NonNegativeInt | None = None
    #: in a parameter sweep (``--param mem_size=200,500``), this run's values of the swept
    #: parameters (``mem_size=500``): its folder and leaderboard row are named by it
    variant: str | None = None

    def resolved(self, scenario: scenarios.Scenario) -> RunConfig:
        """The config with the scenario's training defaults filled in."""
        train = scenario.meta.get("train", {})
        c = dataclasses.replace(self)
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
        c.params = coerce_params(c.strategy, c.params)
        return c

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    config: RunConfig
    log: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path | None


OPTIMIZERS = ("sgd", "adam")


class UnbuiltOptimizer(torch.optim.Optimizer):
    """Stands in for a run's optimiser while the run is only checked (``check_run``): building a
    torch optimiser imports torch._dynamo (3 s in a fresh process), and a check needs only the
    name and settings, which are checked before this is made. It never steps: ``Optimizer``'s
    own ``__init__`` is deliberately not called."""

    def __init__(self, name: str, lr: float, momentum: float):
        self.name, self.lr, self.momentum = name, lr, momentum


def _optimizer(name: str, params, lr: float, momentum: float, build: bool = True
               ) -> torch.optim.Optimizer | UnbuiltOptimizer | None:
    params = [p for p in params if p.requires_grad]
    if not params:
        return None
    if name not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    if not build:
        return UnbuiltOptimizer(name, lr, momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return torch.optim.Adam(params, lr=lr)


def check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} asked for, but CUDA is not available on this machine")
    return dev


def build_model_and_optimizer(config: RunConfig, scenario: scenarios.Scenario, device: torch.device,
                              build_optimizer: bool = True):
    """The run's network (seeded) and optimiser: shared by clbench and Avalanche strategies
    (``build_optimizer=False``: an ``UnbuiltOptimizer``, for checks)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, scenario.input_shape, scenario.n_classes, **config.model_options).to(device)
    return model, _optimizer(config.optimizer, model.parameters(), config.lr, config.momentum, build_optimizer)


def budgeted_params(config: RunConfig, n_tasks: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The strategy's parameters with the experiment's memory budget spent its own way (ER:
    ``mem_size = N``; GEM: ``N // T`` per task; ...), and what the leaderboard must know of it.
    A parameter given explicitly wins, and the run is then marked as off-budget."""
    entry = strategy_entry(config.strategy)
    auto = entry.memory_params(config.memory, n_tasks) if config.memory is not None else {}
    params = {**auto, **config.params}
    overridden = sorted(k for k in auto if k in config.params and config.params[k] != auto[k])
    return params, {"memory_budget": config.memory if auto else None, "uses_memory": bool(auto),
                    "budget_overridden": overridden}


def build_strategy(config: RunConfig, scenario: scenarios.Scenario, device: torch.device, check_only: bool = False):
    """Model, optimiser and strategy exactly as the run uses them (``check_only``: with the
    optimiser checked but not built)."""
    model = optimizer = None
    if strategy_entry(config.strategy).uses_model:
        model, optimizer = build_model_and_optimizer(config, scenario, device, build_optimizer=not check_only)
    params, _ = budgeted_params(config, len(scenario.tasks))
    return create(config.strategy, model, optimizer, setting=scenario.setting, task_classes=scenario.task_classes,
                  n_classes=scenario.n_classes, seed=config.seed, augment=config.augment, **params)


def record(config: RunConfig, scenario: scenarios.Scenario, strategy_config: dict, stream_meta: dict,
           evaluator: Evaluator, schedule: dict | None = None) -> dict:
    """config.json: the run as asked and every choice that changes the numbers."""
    return {
        "run": config.to_dict(),
        "scenario": {"name": scenario.name, "setting": scenario.setting, "n_tasks": len(scenario.tasks),
                     "n_classes": scenario.n_classes, "class_order": scenario.class_order,
                     "task_classes": scenario.task_classes,
                     **{k: v for k, v in scenario.meta.items() if k not in ("class_names",)}},
        "strategy": strategy_config,
        "stream": stream_meta,
        "evaluation": {"on": config.eval_on, "every": config.eval_every, "subset": config.eval_subset,
                       "schedule": schedule or {"kind": "periodic"},
                       "subsets": "resampled every evaluation" if config.eval_resample else "fixed, seeded",
                       "dense_after_switch": config.dense_after_switch, "when": "after the update",
                       "precision": config.eval_precision,
                       "samples_per_task": [evaluator.offsets[t + 1] - evaluator.offsets[t]
                                            for t in range(evaluator.n_tasks)]},
        "versions": {**provenance(), "torch": torch.__version__, "python": platform.python_version(),
                     "numpy": np.__version__},
    }


@dataclass
class Trained:
    """What a training loop hands back to ``run``: the evaluations and the per-iteration record."""

    evaluator: Evaluator
    losses: np.ndarray
    task_of_iteration: np.ndarray
    train_seconds: np.ndarray
    eval_seconds: float
    strategy_config: dict
    stream_meta: dict
    #: training FLOPs, memory held, trainable parameters (``clbench.cost``)
    cost: dict
    #: the evaluation schedule's rule and constants (the adaptive one records its own)
    schedule: dict = field(default_factory=lambda: {"kind": "periodic"})


def make_evaluator(config: RunConfig, scenario: scenarios.Scenario, device) -> Evaluator:
    try:
        return Evaluator(scenario, subset=subset_size(config.eval_subset), resample=config.eval_resample,
                         seed=config.seed, device=device, precision=config.eval_precision, split=config.eval_on)
    except ValueError as e:
        raise InputError(str(e)) from None


def make_schedule(config: RunConfig, bounds: list[tuple[int, int]], evaluator: Evaluator) -> Schedule:
    if config.eval_schedule == "adaptive":
        sizes = [b - a for a, b in zip(evaluator.offsets, evaluator.offsets[1:])]
        sparse = config.eval_every if config.eval_every and config.eval_every > 1 else 50
        # still = within 2.5 samples of the smallest task, so one flipped sample never keeps it dense
        probe = min(64, min(sizes))
        return AdaptiveSchedule(bounds, sparse=sparse, band=max(0.01, 2.5 / max(1, min(sizes))), probe_size=probe,
                                probe_drop=max(0.03, 2.5 / max(1, probe)))
    try:
        return Schedule(bounds, config.eval_every, config.dense_after_switch)
    except ValueError as e:
        raise InputError(str(e)) from None


def train_clbench(config: RunConfig, scenario: scenarios.Scenario, device: torch.device, order_seed: int,
                  progress=None, check_only: bool = False) -> Trained | None:
    """clbench's own loop: the shared stream, ``observe`` per batch, evaluation on schedule.
    ``check_only``: build everything the loop uses, then stop before the first update."""
    strategy = build_strategy(config, scenario, device, check_only)
    stream = make_stream(scenario, config.ordering, seed=order_seed, batch_size=config.batch_size,
                         epochs=config.epochs, iterations=config.iterations,
                         views=getattr(strategy, "views", 1), **config.ordering_params)
    evaluator = make_evaluator(config, scenario, device)
    bounds = [(s.start, s.stop) for s in stream.segments]
    schedule = make_schedule(config, bounds, evaluator)
    if check_only:
        return None
    meter = CostMeter(bounds)
    pool_x = stream.pool.x.to(device)
    pool_y = stream.pool.y.to(device)
    pool_task = stream.pool_task.to(device)
    sizes = [len(b) for b in stream.batches]
    flat = torch.cat(stream.batches).to(device)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n_total = len(stream)

    losses: list[torch.Tensor] = []
    train_seconds = np.zeros(n_total)
    eval_seconds = 0.0
    phase = -1

    adaptive = isinstance(schedule, AdaptiveSchedule)

    def evaluate(n: int, trained: int) -> None:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        ev = evaluator.evaluate(strategy, evaluator.n_tasks if schedule.full(n) else phase + 1, n, trained)
        if adaptive:  # the schedule decides from what it sees (one host transfer per evaluation)
            acc = (ev.correct.float() / ev.counts.clamp(min=1).float()).cpu().tolist()
            schedule.observe(n, acc, list(range(min(len(acc), phase + 1))), trained)
        eval_seconds += time.perf_counter() - t0
        if progress is not None:
            progress(n, n_total, trained, ev)

    def probe(n: int, trained: int) -> None:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        acc = evaluator.probe(strategy, phase + 1, schedule.probe_size)
        moved = schedule.observe_probe(n, acc, list(range(len(acc))))
        eval_seconds += time.perf_counter() - t0
        if moved:  # evaluate where the move was seen, then densely on
            evaluate(n, trained)

    tasks = stream.tasks or scenario.tasks
    strategy.before_stream(scenario)
    evaluate(0, -1)
    for seg in stream.segments:
        phase = max(phase, seg.task)
        strategy.before_task(tasks[seg.task])
        for it in range(seg.start, seg.stop):
            t0 = time.perf_counter()
            idx = flat[starts[it]:starts[it + 1]]
            # index_select, not x[idx]: advanced indexing of a 4-d uint8 tensor is 20x slower
            x = stream.pool.normalize(pool_x.index_select(0, idx))
            y, task_ids = pool_y.index_select(0, idx), pool_task.index_select(0, idx)
            losses.append(meter.step(it, lambda: strategy.observe(x, y, task_ids)))  # noqa: B023
            if it + 1 == seg.stop:  # strategies consolidate a task once, at its first end
                meter.hook(lambda: strategy.after_task(tasks[seg.task]))  # noqa: B023
            train_seconds[it] = time.perf_counter() - t0
            if schedule.due(it + 1):
                evaluate(it + 1, seg.task)
            elif adaptive and schedule.probe_due(it + 1):
                probe(it + 1, seg.task)
    loss_values = torch.stack(losses).float().cpu().numpy() if losses else np.zeros(0)
    return Trained(evaluator, loss_values, stream.task_of_iteration.numpy(), train_seconds, eval_seconds,
                   strategy.config(), {**stream.meta, "iterations_total": n_total},
                   run_cost(meter, strategy.memory_held(), strategy.model, config.strategy + strategy.label_suffix()),
                   schedule.config() if adaptive else {"kind": "periodic"})


def run_cost(meter: CostMeter, held: tuple[int, int], model, label: str) -> dict:
    """The cost fields of a run's summary (and the strategy's leaderboard label)."""
    return {"train_flops": meter.train_flops(), "memory_samples": int(held[0]), "memory_bytes": int(held[1]),
            "trainable_params": trainable_parameters(model), "label": label, "flop_counting": meter.record()}


def scenario_seed(config: RunConfig) -> int:
    """The seed of the run's scenario (class order, permutations) and stream."""
    return config.seed if config.ordering_seed is None else config.ordering_seed


def build_scenario(config: RunConfig) -> scenarios.Scenario:
    return scenarios.build(config.scenario, seed=scenario_seed(config), root=config.data_root,
                           val_fraction=config.val_fraction, **config.scenario_options)


def _train(config: RunConfig, scenario: scenarios.Scenario, device: torch.device, progress=None,
           check_only: bool = False) -> Trained | None:
    if is_avalanche(config.strategy):
        from clbench.interop.avalanche import train_avalanche

        if config.eval_schedule == "adaptive":
            raise InputError(f"{config.strategy} trains in Avalanche's loop, which evaluates periodically: "
                             "--eval-schedule adaptive runs clbench's strategies only")

        return train_avalanche(config, scenario, device, progress, check_only=check_only)
    return train_clbench(config, scenario, device, scenario_seed(config), progress, check_only=check_only)


def check_run(config: RunConfig, scenario: scenarios.Scenario | None = None) -> None:
    """Everything ``run`` does before its first update (scenario, model, optimiser, strategy and
    its budget, stream, evaluator, schedule), without training: an experiment checks each of its
    scenario x strategy pairs this way before it writes anything."""
    device = check_device(config.device)
    scenario = scenario or build_scenario(config)
    with threads(config.threads):
        resolved = config.resolved(scenario)
        if not strategy_entry(config.strategy).uses_model:
            # the experiment's model settings are shared by all its strategies: a bad model name
            # or option is an error even in a table whose only strategy ignores the model (NMC)
            build_model_and_optimizer(resolved, scenario, torch.device("cpu"), build_optimizer=False)
        _train(resolved, scenario, device, check_only=True)


@contextlib.contextmanager
def threads(n: int):
    """Run with ``n`` intra-op CPU threads, restoring the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(config: RunConfig, out_dir: str | Path | None = None, progress=None) -> RunResult:
    """Train and evaluate one configuration; write the run folder atomically when ``out_dir`` is set.

    ``progress`` (optional) is called as ``progress(iteration, total, task, evaluation)`` after
    each evaluation. Strategies named ``avalanche:<Name>`` train in Avalanche's own loop with
    clbench's evaluator plugged in (``clbench.interop.avalanche``). The run uses ``config.threads``
    CPU threads whatever process runs it, so its numbers do not depend on the executor.
    """
    config = validated(RunConfig, dataclasses.asdict(config), "run")
    device = check_device(config.device)
    with threads(config.threads):
        return _run(config, device, out_dir, progress)


def _run(config: RunConfig, device: torch.device, out_dir, progress) -> RunResult:
    t_start = time.perf_counter()
    scenario = build_scenario(config)
    config = config.resolved(scenario)
    trained = _train(config, scenario, device, progress)

    log = pd.DataFrame(trained.evaluator.log_rows(), columns=metrics.LOG_COLUMNS)
    n_total = len(trained.losses)
    train = pd.DataFrame({"iteration": np.arange(1, n_total + 1), "task": trained.task_of_iteration,
                          "loss": trained.losses, "seconds": np.cumsum(trained.train_seconds)})
    train_s = float(trained.train_seconds.sum())
    _, budget = budgeted_params(config, len(scenario.tasks))
    cost = {k: v for k, v in trained.cost.items() if k != "flop_counting"}
    summary = {**metrics.summarize(log), "n_tasks": len(scenario.tasks), "iterations": n_total,
               "n_evaluations": len(trained.evaluator.history), "wall_seconds": time.perf_counter() - t_start,
               "train_seconds": train_s, "eval_seconds": trained.eval_seconds,
               "train_iters_per_second": n_total / max(train_s, 1e-9),
               # the first iteration at which the loss diverged (``metrics.DIVERGENCE_RULE``), or None
               "diverged_at": metrics.diverged_at(trained.losses), "divergence": metrics.DIVERGENCE_RULE,
               **cost, **budget, "memory_capacity": trained.strategy_config.get("memory_capacity"),
               "eval_on": config.eval_on, "augment": config.augment,
               "scenario": scenario.name, "setting": scenario.setting, "strategy": config.strategy,
               "seed": config.seed, "ordering": config.ordering, "ordering_seed": config.ordering_seed,
               "params": config.params}
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        rec = record(config, scenario, trained.strategy_config, trained.stream_meta, trained.evaluator,
                     trained.schedule)
        rec["cost"] = trained.cost["flop_counting"]
        write_run(out, rec, log, train, summary)
    return RunResult(config, log, summary, out)


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
