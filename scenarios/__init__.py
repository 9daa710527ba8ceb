"""clbench scenarios: real datasets -> tasks -> the stream a learner sees.

Importable on its own (it never imports clbench's engine, only ``clbench.common``)::

    from clbench import scenarios
    sc = scenarios.build("split-digits", seed=0)

The names below are imported on first use (PEP 562), so importing the package does not import
torch: reports and plots read run folders without it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "permuted": "builders", "resolve_class_order": "builders", "rotated": "builders", "split": "builders",
    "SETTINGS": "data", "Scenario": "data", "Task": "data", "TensorData": "data",
    "InputError": "clbench.common.errors",
    "from_arrays": "own", "from_datasets": "own",
    "SCENARIOS": "registry", "build": "registry", "list_scenarios": "registry", "scenario_spec": "registry",
    "DATASETS": "sources", "load_dataset": "sources",
    "Segment": "stream", "Stream": "stream", "sequential": "stream",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clbench.scenarios' has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"clbench.scenarios.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
