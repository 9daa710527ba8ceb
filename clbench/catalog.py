"""Every strategy name the app accepts: clbench's registry plus ``avalanche:<Name>``.

The ``strategies`` package knows nothing of Avalanche (only the interop module imports it,
lazily); this module is where the app looks names and parameters up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scenarios.errors import InputError
from strategies import registry

AVALANCHE_PREFIX = "avalanche:"


def is_avalanche(name: str) -> bool:
    return name.startswith(AVALANCHE_PREFIX)


@dataclass(frozen=True)
class AvalancheEntry:
    name: str
    uses_model: bool = True

    def params(self) -> dict[str, Any]:
        from clbench.interop.avalanche import strategy_params

        return strategy_params(self.name[len(AVALANCHE_PREFIX):])

    def memory_params(self, budget: int, n_tasks: int) -> dict[str, Any]:
        """Avalanche's memory strategies get the experiment's budget too (Replay, ER_ACE, DER and
        GDumb hold N in all; GEM and AGEM N // T per experience)."""
        from clbench.interop.avalanche import memory_params

        return memory_params(self.name[len(AVALANCHE_PREFIX):], budget, n_tasks)


def strategy_entry(name: str):
    if is_avalanche(name):
        from clbench.interop.avalanche import check_strategy_name

        check_strategy_name(name[len(AVALANCHE_PREFIX):])
        return AvalancheEntry(name)
    return registry.strategy_entry(name)


def coerce_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    if not is_avalanche(name):
        return registry.coerce_params(name, params)
    known = strategy_entry(name).params()
    out = {}
    for k, v in params.items():
        if k not in known:
            raise InputError(f"strategy {name} has no parameter {k!r}; its parameters: "
                             f"{', '.join(f'{p}={d}' for p, d in known.items()) or 'none'}")
        out[k] = registry.coerce_value(k, v, known[k])
    return out

