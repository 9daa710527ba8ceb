"""Stream orderings by name: every strategy of an experiment sees the same stream for a seed."""

from __future__ import annotations

import inspect

from scenarios.data import Scenario
from scenarios.errors import InputError
from scenarios.stream import Stream, sequential

ORDERINGS = {"sequential": sequential}


def ordering_params(name: str) -> dict:
    fn = _ordering(name)
    base = set(inspect.signature(sequential).parameters)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.name not in base}


def _ordering(name: str):
    if name not in ORDERINGS:
        raise InputError(f"unknown ordering {name!r}; known orderings: {', '.join(ORDERINGS)}")
    return ORDERINGS[name]


def make_stream(scenario: Scenario, ordering: str = "sequential", **kwargs) -> Stream:
    fn = _ordering(ordering)
    allowed = set(inspect.signature(fn).parameters) - {"scenario"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError(f"ordering {ordering} has no parameter {', '.join(unknown)}; its parameters: "
                         f"{', '.join(ordering_params(ordering)) or 'none'}")
    return fn(scenario, **kwargs)
