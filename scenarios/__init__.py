"""clbench scenarios: real datasets -> tasks -> the stream a learner sees.

Importable on its own (it never imports ``clbench``)::

    import scenarios
    sc = scenarios.build("split-digits", seed=0)
"""

from scenarios.builders import permuted, resolve_class_order, rotated, split
from scenarios.data import SETTINGS, Scenario, Task, TensorData
from scenarios.errors import InputError
from scenarios.own import from_arrays, from_datasets
from scenarios.registry import SCENARIOS, build, list_scenarios, scenario_spec
from scenarios.sources import DATASETS, load_dataset
from scenarios.stream import Segment, Stream, sequential

__all__ = [
    "DATASETS", "SCENARIOS", "SETTINGS", "InputError", "Scenario", "Task", "TensorData", "build", "from_arrays",
    "from_datasets",
    "list_scenarios", "load_dataset", "permuted", "resolve_class_order", "rotated", "scenario_spec", "split",
    "Segment", "Stream", "sequential",
]
