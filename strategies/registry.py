"""The built-in strategies by name, with their own parameters and defaults (``clbench list strategies``).

What the app accepts beyond these (Avalanche's strategies, import paths, installed plugins) is
looked up in ``clbench.run.catalog``, the one lookup of every command."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clbench.common.errors import InputError
from clbench.common.validation import validate_keywords
from clbench.strategies.base import Finetune, Strategy

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
    #: the training loop that runs it (``clbench.run.runner.LOOPS``): clbench's own
    loop: str = "clbench"

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

    def coerce(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check names, types and ranges against the declared parameters (``clbench.common.validation``)
        and convert ``--param`` strings to their types."""
        return validate_keywords(f"strategy {self.name}", self.classes, params, COMMON, self.fixed)

    def build(self, model, optimizer=None, **kwargs) -> Strategy:
        """The strategy from already checked parameters (``coerce``) and the runner's arguments."""
        return self.factory(model, optimizer, **kwargs)


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


def create(name: str, model, optimizer=None, **kwargs) -> Strategy:
    """Build a registered strategy in your own loop; ``kwargs`` are the common runner arguments plus
    its own parameters (checked against their declarations, strings converted). clbench's runner
    looks names up once in ``clbench.run.catalog`` instead, which also knows Avalanche's strategies,
    import paths and installed plugins."""
    if name not in REGISTRY:
        raise InputError(f"unknown strategy {name!r}; known strategies: {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    own = {k: v for k, v in kwargs.items() if k not in COMMON}
    common = {k: v for k, v in kwargs.items() if k in COMMON}
    return entry.factory(model, optimizer, **common, **entry.coerce(own))


register("finetune", Finetune, "plain SGD on the stream: the lower bound")


def _register_builtin() -> None:
    from clbench.strategies.ewc import EWC
    from clbench.strategies.gem import GEM
    from clbench.strategies.joint import Joint
    from clbench.strategies.nmc import NMC
    from clbench.strategies.replay import ER
    from clbench.strategies.viewbatch import ViewBatch

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
