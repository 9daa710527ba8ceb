"""The one strategy lookup of every command (``run``, ``tune``, ``report``, ``list``): the built-in
strategies (``clbench.strategies.registry``), ``avalanche:<Name>``, a ``Strategy`` subclass of your own
named ``package.module:Class``, and installed plugins (entry points ``clbench.strategies``).

Each entry says which training loop runs it (``entry.loop``, a key of ``clbench.run.runner.LOOPS``),
its own parameters and defaults, how it spends a memory budget, and how its ``--param`` values are
checked (``entry.coerce``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from clbench.common.errors import InputError
from clbench.common.imports import import_object, plugin, plugin_names
from clbench.common.validation import coerce_value
from clbench.strategies.base import Strategy
from clbench.strategies.registry import REGISTRY, StrategyEntry

AVALANCHE_PREFIX = "avalanche:"
#: entry-point group of installed strategy plugins
PLUGINS = "clbench.strategies"


@dataclass(frozen=True)
class AvalancheEntry:
    """An Avalanche 0.6 strategy, trained in Avalanche's own loop (``clbench.run.avalanche_loop``)."""

    name: str
    uses_model: bool = True
    loop: str = "avalanche"

    @property
    def avalanche_name(self) -> str:
        return self.name[len(AVALANCHE_PREFIX):]

    @property
    def summary(self) -> str:
        return f"Avalanche's {self.avalanche_name}, in its own loop"

    def params(self) -> dict[str, Any]:
        from clbench.interop.avalanche import strategy_params

        return strategy_params(self.avalanche_name)

    def memory_params(self, budget: int, n_tasks: int) -> dict[str, Any]:
        """Avalanche's memory strategies get the experiment's budget too (Replay, ER_ACE, DER and
        GDumb hold N in all; GEM and AGEM N // T per experience)."""
        from clbench.interop.avalanche import memory_params

        return memory_params(self.avalanche_name, budget, n_tasks)

    def check_complete(self, params: dict[str, Any]) -> None:
        """Every parameter Avalanche requires is given (with the budget's), or one line naming them."""
        from clbench.interop.avalanche import required_params

        missing = [p for p in required_params(self.avalanche_name) if p not in params]
        if missing:
            raise InputError(f"{self.name} needs {', '.join(missing)}: add "
                             + " ".join(f"--param {self.name}.{p}=VALUE" for p in missing))

    def coerce(self, params: dict[str, Any]) -> dict[str, Any]:
        known = self.params()
        out = {}
        for k, v in params.items():
            if k not in known:
                raise InputError(f"strategy {self.name} has no parameter {k!r}; its parameters: "
                                 f"{', '.join(f'{p}={d}' for p, d in known.items()) or 'none'}")
            out[k] = coerce_value(k, v, known[k])
        return out


Entry = StrategyEntry | AvalancheEntry
#: entries of import paths and plugins, looked up once per process
_FOUND: dict[str, StrategyEntry] = {}


def lookup(name: str) -> Entry:
    """The entry of any strategy name clbench accepts; an unknown name is one line (``InputError``).
    An import path works in every process that runs it (the local pool's, Ray's workers), where a
    ``register`` call made in the parent process would not."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith(AVALANCHE_PREFIX):
        from clbench.interop.avalanche import check_strategy_name

        check_strategy_name(name[len(AVALANCHE_PREFIX):])
        return AvalancheEntry(name)
    if name not in _FOUND:
        if ":" in name:
            _FOUND[name] = _imported(name)
        elif path := plugin(PLUGINS, name):
            _FOUND[name] = dataclasses.replace(_imported(path), name=name)
        else:
            raise InputError(f"unknown strategy {name!r}; known strategies: {', '.join(known_names())} "
                             "(or avalanche:NAME, or your own as package.module:Class)")
    return _FOUND[name]


def known_names() -> list[str]:
    """Built-in and installed strategy names (``all`` on the command line)."""
    return [*REGISTRY, *plugin_names(PLUGINS)]


def _imported(name: str) -> StrategyEntry:
    cls = import_object(name, "strategy")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise InputError(f"strategy {name!r} is not a subclass of clbench.strategies.Strategy")
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else f"{name} (own strategy)"
    factory = lambda model, optimizer=None, **kw: cls(model, optimizer, **kw)  # noqa: E731
    return StrategyEntry(name, factory, (cls,), summary, {})
