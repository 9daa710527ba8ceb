"""The parts a run is built from, the same for both training loops: its device and thread count, its
scenario, its seeded network and optimiser, the evaluator and the evaluation schedule."""

from __future__ import annotations

import contextlib

import torch

from clbench import scenarios
from clbench.common.errors import InputError
from clbench.evaluation.evaluator import Evaluator, subset_size
from clbench.evaluation.schedules import Schedule, make_schedule
from clbench.run.settings import RunConfig
from clbench.strategies import build_model

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


@contextlib.contextmanager
def threads(n: int):
    """Run with ``n`` intra-op CPU threads, restoring the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def scenario_seed(config: RunConfig) -> int:
    """The seed of the run's scenario (class order, permutations) and stream."""
    return config.seed if config.ordering_seed is None else config.ordering_seed


def build_scenario(config: RunConfig) -> scenarios.Scenario:
    return scenarios.build(config.scenario, seed=scenario_seed(config), root=config.data_root,
                           val_fraction=config.val_fraction, **config.scenario_options)


def build_model_and_optimizer(config: RunConfig, scenario: scenarios.Scenario, device: torch.device,
                              build_optimizer: bool = True):
    """The run's network (seeded) and optimiser: shared by clbench and Avalanche strategies
    (``build_optimizer=False``: an ``UnbuiltOptimizer``, for checks)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, scenario.input_shape, scenario.n_classes, **config.model_options).to(device)
    return model, _optimizer(config.optimizer, model.parameters(), config.lr, config.momentum, build_optimizer)


def make_evaluator(config: RunConfig, scenario: scenarios.Scenario, device) -> Evaluator:
    try:
        return Evaluator(scenario, subset=subset_size(config.eval_subset), resample=config.eval_resample,
                         seed=config.seed, device=device, precision=config.eval_precision, split=config.eval_on)
    except ValueError as e:
        raise InputError(str(e)) from None


def schedule_for(config: RunConfig, evaluator: Evaluator) -> Schedule:
    """The run's evaluation schedule (``clbench.evaluation.schedules``), for its evaluation subsets."""
    sizes = [b - a for a, b in zip(evaluator.offsets, evaluator.offsets[1:])]
    return make_schedule(config.eval_schedule, config.eval_every, config.dense_after_switch, sizes)
