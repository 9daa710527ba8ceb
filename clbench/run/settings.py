"""The settings of a run, each declared once: its type and range (checked by pydantic before
anything runs), its default, its help text and its role. The command line's options, the keys of an
experiment's TOML and the ``run`` record of ``config.json`` all come from these declarations, so a
new setting is one field here.

Torch-free: the CLI builds its options from this module before it imports torch, and reports read
the roles of settings without it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from clbench.common.errors import InputError
from clbench.common.validation import Count, Family, NonNegativeInt, Positive, Share, describe

#: a setting's role: "numbers" changes a run's numbers (two runs that differ in it are different rows
#: of a table, and cannot share an experiment folder); "bits" changes only the last bits of the float
#: sums (one row, but one folder holds one value); "where" says where the run happens, not what it
#: computes (the device type still must match within a folder, see ``Experiment.identity``)
Role = Literal["numbers", "bits", "where"]


def setting(default: Any = None, help: str = "", *, role: Role = "numbers", cli: bool = True,
            per_strategy: bool = False, factory: Any = None) -> Any:
    """A declared setting: a dataclass field whose metadata feeds the CLI (``help``; ``cli=False``
    for settings with options of their own shape, such as ``scenario_options``), the experiment
    folder's identity and the leaderboard's rows (``role``), and which settings one strategy may set
    for itself (``per_strategy``: its tuned or published optimiser settings)."""
    metadata = {"help": help, "role": role, "cli": cli, "per_strategy": per_strategy}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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


@dataclass
class RunSettings:
    """How runs train and evaluate, shared by every run of an experiment. ``None`` means "the
    scenario's default"."""

    scenario_options: dict[str, Any] = setting(factory=dict, cli=False)
    model: str | None = setting(None, "network: mlp, cnn, resnet18-slim")
    model_options: dict[str, Any] = setting(factory=dict, cli=False)
    optimizer: Literal["sgd", "adam"] | None = setting(None, cli=False, per_strategy=True)
    lr: Positive | None = setting(None, "learning rate", per_strategy=True)
    momentum: Share | None = setting(None, cli=False, per_strategy=True)
    batch_size: Count | None = setting(None, "training batch size", per_strategy=True)
    epochs: Positive | None = setting(None, "epochs per task (scenario default otherwise)")
    iterations: Count | None = setting(None, "iterations per task (instead of epochs)")
    eval_every: Count | None = setting(
        1, "periodic: evaluate every N iterations [1]; refine: coarse evaluation every N (above 1) [16]")
    #: "refine": coarse evaluation, looks back at the exact iterations the metrics need (the
    #: default); "periodic": every ``eval_every`` iterations (plus ``dense_after_switch``), every
    #: iteration by default, the reference; "adaptive": every iteration while old tasks' accuracy
    #: moves, sparse elsewhere (``clbench.evaluation.schedules``)
    eval_schedule: Literal["refine", "periodic", "adaptive"] = setting(
        "refine", "refine: coarse evaluation and looks back at the exact iterations of each minimum, recovery "
        "and largest drop [the default]; periodic: every --eval-every iterations (every iteration: the "
        "reference); adaptive: dense while accuracy moves")
    eval_subset: EvalSubset = setting(1000, "evaluation samples per task, or 'all' [1000]")
    eval_resample: bool = setting(False, "redraw evaluation subsets every time")
    eval_precision: Literal["fp32", "bf16"] = setting(
        "fp32", "evaluation forward precision [fp32]; bf16 is ~4x faster, may flip near-ties")
    dense_after_switch: NonNegativeInt = setting(0, "evaluate every iteration for N iterations after a boundary")
    ordering: str = setting("sequential", "stream ordering [sequential]")
    ordering_params: dict[str, Any] = setting(factory=dict, cli=False)
    memory: NonNegativeInt | None = setting(
        None, "memory budget in samples for every memory-using strategy (ER/vb-er hold N, GEM N // tasks per task) "
        "[the scenario's default]")
    augment: Family | None = setting(None, "training augmentation of every strategy [the scenario's default]")
    val_fraction: Share = setting(0.1, "share of each class's training data held out for validation [0.1]; "
                                  "0 turns it off")
    eval_on: Literal["test", "val"] = setting(
        "test", "evaluate on the test sets (report) or the validation split (choose hyperparameters) [test]")
    #: torch intra-op threads of the run's own process, fixed per run and recorded: the reduction
    #: order, hence the last bits of every float, depends on it; so ``--jobs 1``, ``--jobs N`` and
    #: Ray give byte-identical curves
    threads: Count = setting(1, "CPU threads of each run, fixed whatever --jobs is, so results do not depend on "
                             "the executor [1]", role="bits")
    device: str = setting("cpu", "cpu, cuda, cuda:N [cpu]", role="where")
    data_root: str | None = setting(None, "where the dataset files are", role="where")

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)}


def declared_settings() -> list[dataclasses.Field]:
    """Every setting's declaration (``setting``), in order."""
    return list(dataclasses.fields(RunSettings))


def setting_names(*roles: Role) -> tuple[str, ...]:
    """The settings of the given roles."""
    return tuple(f.name for f in declared_settings() if f.metadata["role"] in roles)


def per_strategy_settings() -> tuple[str, ...]:
    """The run settings one strategy may set for itself (``Experiment.strategy_settings``); the data,
    budget, model and evaluation stay the experiment's, the same for every row of a table."""
    return tuple(f.name for f in declared_settings() if f.metadata["per_strategy"])


@functools.cache
def setting_types() -> dict[str, Any]:
    return typing.get_type_hints(RunSettings, include_extras=True)


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: the fields of a run that name it rather than set how it trains (scenario, strategy, seed, ...)
RUN_IDENTITY = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in {f.name for f in
                                                                                     declared_settings()})


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
