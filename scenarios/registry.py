"""Named scenarios with the defaults used in the literature.

Each entry says how to build the tasks and how the literature trains on them (model, batch
size, epochs or iterations, optimiser, learning rate); the runner reads the training defaults
from ``scenario.meta["train"]`` unless the user overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, create_model

from clbench.common.errors import InputError
from clbench.common.imports import plugin, plugin_names
from clbench.common.validation import Count, Finite, describe
from clbench.scenarios.builders import permuted, rotated, split
from clbench.scenarios.data import Scenario, Setting, seeded_generator, stratified_split
from clbench.scenarios.own import PLUGINS, build_own
from clbench.scenarios.sources import dataset_info, load_dataset


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    dataset: str
    kind: str  # split | permuted | rotated
    setting: str
    args: dict[str, Any]
    train: dict[str, Any]
    source: str
    options: tuple[str, ...] = field(default=())

    @property
    def n_tasks(self) -> int:
        return len(self.args["angles"]) if self.kind == "rotated" else self.args["n_tasks"]


_MLP_SMALL = {"model": "mlp", "hidden": [400, 400], "optimizer": "sgd", "momentum": 0.9, "augment": "none"}
_SPLIT_OPTS = ("n_tasks", "class_order", "setting", "task_order")
_PERM_OPTS = ("n_tasks", "setting", "task_order", "first_task_identity", "train_per_task")

SCENARIOS: dict[str, ScenarioSpec] = {s.name: s for s in [
    ScenarioSpec("split-digits", "digits", "split", "class-il", {"n_tasks": 5},
                 {**_MLP_SMALL, "batch_size": 32, "epochs": 10, "lr": 0.05, "memory": 200},
                 "offline default: scikit-learn digits, 5 tasks of 2 classes", _SPLIT_OPTS),
    ScenarioSpec("split-mnist", "mnist", "split", "class-il", {"n_tasks": 5},
                 {**_MLP_SMALL, "batch_size": 256, "epochs": 1, "lr": 0.01, "memory": 2000},
                 "De Lange et al. 2023 (MLP 400-400, batch 256, SGD 0.01; they train 10 epochs)", _SPLIT_OPTS),
    ScenarioSpec("split-fmnist", "fashion-mnist", "split", "class-il", {"n_tasks": 5},
                 {**_MLP_SMALL, "batch_size": 256, "epochs": 1, "lr": 0.01, "memory": 2000},
                 "as split-mnist, on Fashion-MNIST", _SPLIT_OPTS),
    ScenarioSpec("permuted-mnist", "mnist", "permuted", "domain-il", {"n_tasks": 10},
                 {**_MLP_SMALL, "hidden": [1000, 1000], "batch_size": 128, "iterations": 1000, "lr": 0.01,
                  "memory": 2000},
                 "van de Ven et al. 2022 (MLP 2x1000, 10 tasks; they train 5,000 iterations with Adam)", _PERM_OPTS),
    ScenarioSpec("permuted-fmnist", "fashion-mnist", "permuted", "domain-il", {"n_tasks": 10},
                 {**_MLP_SMALL, "hidden": [1000, 1000], "batch_size": 128, "iterations": 1000, "lr": 0.01,
                  "memory": 2000},
                 "as permuted-mnist, on Fashion-MNIST", _PERM_OPTS),
    ScenarioSpec("rotated-mnist", "mnist", "rotated", "domain-il", {"angles": [0.0, 80.0, 160.0]},
                 {**_MLP_SMALL, "batch_size": 128, "iterations": 500, "lr": 0.1, "momentum": 0.0,
                  "memory": 1500},
                 "Hess et al. 2023 / van de Ven (0/80/160 degrees, MLP 2x400, SGD 0.1, 500 iterations)",
                 ("angles", "setting", "task_order")),
    ScenarioSpec("split-cifar100", "cifar100", "split", "class-il", {"n_tasks": 10},
                 {"model": "resnet18-slim", "optimizer": "sgd", "momentum": 0.9, "batch_size": 32, "epochs": 1,
                  "lr": 0.03, "memory": 2000, "augment": "weak"},
                 "10 tasks of 10 classes (n_tasks=20 gives GEM's 20x5), reduced ResNet-18 (nf=20)", _SPLIT_OPTS),
    ScenarioSpec("split-cifar10", "cifar10", "split", "class-il", {"n_tasks": 5},
                 {"model": "resnet18-slim", "optimizer": "sgd", "momentum": 0.0, "batch_size": 32, "epochs": 1,
                  "lr": 0.1, "memory": 200, "augment": "weak"},
                 "5 tasks of 2 classes (Mammoth's S-CIFAR-10: SGD 0.1, batch 32; they train 50 epochs)", _SPLIT_OPTS),
]}


def _order(value: Any) -> Any:
    if value is None or value in ("fixed", "seed"):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise ValueError("must be 'fixed', 'seed' or a list of whole numbers")


Order = Annotated[Any, BeforeValidator(_order)]
#: the types of the scenario options (``--n-tasks``, TOML ``[scenario_options]``); what a value
#: means for a given dataset (a class order holding every class once) the builders check
OPTION_TYPES: dict[str, Any] = {
    "n_tasks": Count, "class_order": Order, "task_order": Order, "setting": Setting, "first_task_identity": bool,
    "train_per_task": Count,
    "angles": Annotated[list[Finite], Field(min_length=1)],
}
_OPTIONS = create_model("scenario_options", __config__=ConfigDict(extra="forbid"),
                        **{k: (t, None) for k, t in OPTION_TYPES.items()})


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options given, checked against the scenario's list and their declared types."""
    spec = scenario_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise InputError(f"scenario {name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(spec.options)}")
    try:
        values = _OPTIONS.model_validate(options)
    except ValidationError as e:
        raise InputError(describe(e, f"scenario {name}")) from None
    return {k: getattr(values, k) for k in options}


def scenario_spec(name: str) -> ScenarioSpec:
    if name not in SCENARIOS:
        raise InputError(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)} "
                         "(or your own as package.module:function)")
    return SCENARIOS[name]


#: the share of every class's training samples held out for validation, unless asked otherwise
DEFAULT_VAL_FRACTION = 0.1


def build(name: str, seed: int = 0, *, root: str | Path | None = None, download: bool = False,
          val_fraction: float = DEFAULT_VAL_FRACTION, **overrides) -> Scenario:
    """Build a named scenario. ``overrides`` change the builder's arguments (``n_tasks=20``,
    ``class_order="seed"``, ``setting="task-il"``, ...); unknown ones are an error.

    ``val_fraction`` of every class's training samples (seeded by ``seed``, stratified) become
    the tasks' validation data and are never trained on; 0 keeps all of them for training.

    ``package.module:function`` builds a scenario of your own (``clbench.scenarios.own``)."""
    if is_own(name):
        return build_own(name, seed, val_fraction, **overrides)
    spec = scenario_spec(name)
    overrides = check_options(name, overrides)
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), not {val_fraction}")
    train, test, names = load_dataset(spec.dataset, root=root, download=download)
    train, val = stratified_split(train, val_fraction, seeded_generator(seed, "val-split"))
    data = (train, test, names)
    args = {**spec.args, "setting": spec.setting, **overrides}
    meta = {"dataset": spec.dataset, "train": dict(spec.train), "source": spec.source, "seed": seed,
            "options": {k: v for k, v in args.items()}, "val_fraction": val_fraction,
            "val_split": "stratified by class, seeded, carved out of the training data"}
    if spec.kind == "split":
        return split(data, name=name, seed=seed, meta=meta, val=val, **args)
    if spec.kind == "permuted":
        return permuted(data, seed=seed, name=name, meta=meta, val=val, **args)
    return rotated(data, name=name, seed=seed, meta=meta, val=val, **args)


def is_own(name: str) -> bool:
    """Whether ``name`` is a scenario of your own (an import path or an installed plugin's name)
    rather than a built-in one: the registry decides what is built in."""
    return name not in SCENARIOS and (":" in name or plugin(PLUGINS, name) is not None)


def known_names() -> list[str]:
    """Built-in and installed scenario names (``all`` on the command line)."""
    return [*SCENARIOS, *plugin_names(PLUGINS)]


def list_scenarios() -> list[dict[str, Any]]:
    """Name, dataset, tasks, setting and whether the data is available here — for ``clbench list``."""
    return [{"name": s.name, "dataset": s.dataset, "tasks": s.n_tasks, "setting": s.setting,
             "available": dataset_info(s.dataset).available(), "source": s.source} for s in SCENARIOS.values()]
