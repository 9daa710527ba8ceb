"""Strategies by name, with their own parameters and defaults (``clbench list strategies``)."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scenarios.errors import InputError
from scenarios.imports import import_object, plugin
from scenarios.validation import validate_keywords
from strategies.base import Finetune, Strategy

#: arguments every strategy takes from the runner, not from ``--param``
COMMON = {"self", "model", "optimizer", "lr", "momentum", "setting", "task_classes", "n_classes", "seed", "inner",
          "augment"}


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    factory: Callable[..., Strategy]
    classes: tuple[type, ...]
    summary: str
    fixed: dict[str, Any]

    def params(self) -> dict[str, Any]:
        """Own parameters and their defaults (later classes are wrappers around the first)."""
        out: dict[str, Any] = {}
        for cls in self.classes:
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.name not in COMMON and p.kind == p.KEYWORD_ONLY:
                    out[p.name] = p.default
        out.update(self.fixed)
        return out

    @property
    def uses_model(self) -> bool:
        return self.classes[0].uses_model

    def memory_params(self, budget: int, n_tasks: int) -> dict[str, Any]:
        """How this strategy spends a memory budget of ``budget`` samples (empty: it keeps none)."""
        return self.classes[0].memory_params(budget, n_tasks)


REGISTRY: dict[str, StrategyEntry] = {}


def register(name: str, cls: type, summary: str, wrapper: type | None = None, **fixed) -> None:
    if wrapper is None:
        factory = lambda model, optimizer=None, **kw: cls(model, optimizer, **{**fixed, **kw})  # noqa: E731
        classes = (cls,)
    else:
        outer_names = set(inspect.signature(wrapper.__init__).parameters) - {"self", "inner"}

        def factory(model, optimizer=None, **kw):
            outer_kw = {k: v for k, v in kw.items() if k in outer_names}
            inner_kw = {k: v for k, v in kw.items() if k not in outer_names or k in COMMON}
            return wrapper(cls(model, optimizer, **{**fixed, **inner_kw}), **outer_kw)

        classes = (cls, wrapper)
    REGISTRY[name] = StrategyEntry(name, factory, classes, summary, fixed)


def strategy_entry(name: str) -> StrategyEntry:
    """A registered strategy, or ``package.module:Class`` (a ``Strategy`` subclass of your own),
    imported on first use: an import path works in every process that runs it (the local pool's,
    Ray's workers), where a ``register`` call made in the parent process would not."""
    if name not in REGISTRY and ":" in name:
        REGISTRY[name] = _imported(name)
    elif name not in REGISTRY and (path := plugin("clbench.strategies", name)):  # an installed plugin
        REGISTRY[name] = dataclasses.replace(_imported(path), name=name)
    if name not in REGISTRY:
        raise InputError(f"unknown strategy {name!r}; known strategies: {', '.join(REGISTRY)} "
                         "(or your own as package.module:Class)")
    return REGISTRY[name]


def _imported(name: str) -> StrategyEntry:
    cls = import_object(name, "strategy")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise InputError(f"strategy {name!r} is not a subclass of strategies.Strategy")
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else f"{name} (own strategy)"
    factory = lambda model, optimizer=None, **kw: cls(model, optimizer, **kw)  # noqa: E731
    return StrategyEntry(name, factory, (cls,), summary, {})


def coerce_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check names, types and ranges against the strategy's declared parameters (``scenarios.validation``)
    and convert ``--param`` strings to their types."""
    entry = strategy_entry(name)
    return validate_keywords(f"strategy {name}", entry.classes, params, COMMON, entry.fixed)


def coerce_value(key: str, value: Any, default: Any) -> Any:
    """A ``name=value`` string as the type of ``default``, for parameters declared by others (orderings,
    Avalanche's strategies); with no default, a number if it reads as one. Numbers must be finite."""
    if isinstance(value, str):
        value = _parse(key, value, default)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"parameter {key}={value} must be a finite number")
    return value


def _parse(key: str, value: str, default: Any) -> Any:
    casts = {bool: _bool, int: int, float: float, str: str}.get(type(default), None)
    try:
        if casts is not None:
            return casts(value)
    except ValueError:
        raise InputError(f"parameter {key}={value!r} is not a valid {type(default).__name__}") from None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return None if value.lower() == "none" else value


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


def create(name: str, model, optimizer=None, **kwargs) -> Strategy:
    """Build a registered strategy; ``kwargs`` are the common runner arguments plus its own parameters."""
    entry = strategy_entry(name)
    own = {k: v for k, v in kwargs.items() if k not in COMMON}
    common = {k: v for k, v in kwargs.items() if k in COMMON}
    return entry.factory(model, optimizer, **common, **coerce_params(name, own))


register("finetune", Finetune, "plain SGD on the stream: the lower bound")


def _register_builtin() -> None:
    from strategies.ewc import EWC
    from strategies.gem import GEM
    from strategies.joint import Joint
    from strategies.nmc import NMC
    from strategies.replay import ER
    from strategies.viewbatch import ViewBatch

    register("joint", Joint, "incremental joint training on every task seen so far (full replay)")
    register("joint-offline", Joint, "i.i.d. over all tasks from the start: the upper bound", mode="offline")
    register("er", ER, "experience replay from a reservoir or class-balanced memory")
    register("ewc", EWC, "elastic weight consolidation (separate or online; exact/sample/empirical/batched Fisher)")
    register("gem", GEM, "gradient episodic memory: QP projection against past tasks' memory gradients")
    register("nmc", NMC, "nearest class mean on frozen, L2-normalised features; on raw pixels by default, "
             "Janson et al.'s baseline with backbone=timm:/torchvision: pretrained features")
    register("vb-er", ER, "view-batch model (replay + self-supervision) over experience replay", wrapper=ViewBatch)
    register("vb-finetune", Finetune, "view-batch model over plain finetuning", wrapper=ViewBatch)


_register_builtin()
