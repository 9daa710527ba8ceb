"""Experiments: several scenarios x strategies x seeds, resumable, optionally in parallel.

An experiment folder holds ``experiment.toml`` (the experiment exactly as run) and one run
folder per (scenario, strategy, seed). A run folder appears only when complete (see
``clbench.run.record.write_run``), so re-running an interrupted experiment skips the finished runs and
redoes the rest; ``force`` reruns everything.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import re
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tomllib
from pydantic import AfterValidator, Field

from clbench.common import io, progress
from clbench.common.errors import InputError
from clbench.common.io import is_complete
from clbench.common.lock import folder_lock
from clbench.common.validation import Count
from clbench.run import catalog
from clbench.run.resolve import ResolvedRun
from clbench.run.settings import RunConfig, RunSettings, per_strategy_settings, setting_names, validated
from clbench.scenarios.own import scenario_factory
from clbench.scenarios.registry import is_own, scenario_spec

DEFAULT_STRATEGIES = ["finetune", "joint", "joint-offline", "er", "ewc", "gem", "nmc", "vb-er"]
#: the settings that must match for two invocations to share one experiment folder
RUN_SETTINGS = setting_names("numbers", "bits") + ("device_type", "params", "strategy_settings", "orderings")


@dataclass
class Experiment(RunSettings):
    """Scenarios x strategies x seeds (x orderings), all run with the same ``RunSettings``."""

    name: ExperimentName = "default"
    scenarios: Names = field(default_factory=lambda: ["split-digits"])
    strategies: Names = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    seeds: Seeds = field(default_factory=lambda: [0, 1, 2])
    #: per strategy: {"er": {"mem_size": 500}}; the key "*" applies to every strategy that has the parameter
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per strategy, optimiser settings of its own (``per_strategy_settings()``): {"ewc": {"lr": 0.05}}
    strategy_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: run every (scenario, strategy, seed) over this many seeded orderings (class order + stream);
    #: with more than one, the class order defaults to "seed"
    orderings: Count = 1
    #: the paper preset this experiment started from (``clbench.presets``): its published numbers
    #: stand beside ours in ``leaderboard.md``
    preset: str | None = None
    #: the metric columns of its tables (``clbench report --metrics``: the printed table,
    #: leaderboard.md, and ``clbench report`` on its folder); empty: every column
    metrics: ReportMetrics = field(default_factory=list)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], what: str = "experiment") -> Experiment:
        """An experiment from TOML or command-line values, every field's type and range checked."""
        return validated(cls, dict(values), what)

    def validate(self) -> Experiment:
        """The experiment with every value checked and converted to its declared type (``checked``)."""
        return self.checked()[0]

    def checked(self) -> tuple[Experiment, list[ResolvedRun]]:
        """Everything a run checks before its first update, for every scenario x strategy, so a bad
        value fails now and not after hours of other runs (and before anything is written). Returns
        the experiment with every value checked and converted to its declared type, and its runs
        resolved once (``clbench.run.resolve``): the workers train them as they are."""
        from clbench.run.parts import build_scenario
        from clbench.run.runner import check_run, resolve_for

        exp = validated(Experiment, dataclasses.asdict(self), "experiment")
        if exp.eval_on == "val" and float(exp.val_fraction) == 0.0:
            raise InputError("--eval-on val needs a validation split: --val-fraction must be > 0")
        for s in exp.scenarios:
            scenario_factory(s) if is_own(s) else scenario_spec(s)
        for s in exp.strategies:
            catalog.lookup(s)
        for key, values in exp.params.items():
            targets = exp.strategies if key == "*" else [key]
            if key != "*" and key not in exp.strategies:
                raise InputError(f"--param {key}.<name> given, but strategy {key} is not part of this experiment")
            for k in values:
                if not any(k in catalog.lookup(t).params() for t in targets):
                    raise InputError(f"no strategy in this experiment has a parameter {k!r}")
        for s in exp.strategies:
            for values, _ in sweep(exp.strategy_params(s)):
                catalog.lookup(s).coerce(values)
        own = per_strategy_settings()
        for s, values in exp.strategy_settings.items():
            if s not in exp.strategies:
                raise InputError(f"strategy_settings for {s}, but strategy {s} is not part of this experiment")
            other = sorted(set(values) - set(own))
            if other:
                raise InputError(f"strategy_settings.{s}: {', '.join(other)} cannot differ between strategies "
                                 f"(only {', '.join(own)} can)")
            validated(RunSettings, {**exp.settings(), **values}, f"strategy_settings.{s}")
        built, checked, runs = {}, set(), []
        for c in exp.run_configs():
            if c.scenario not in built:  # missing or malformed data, bad scenario options
                built[c.scenario] = build_scenario(c)
            run = resolve_for(c, built[c.scenario])
            if (c.scenario, c.strategy) not in checked:  # the model, budget, stream, evaluator and schedule
                checked.add((c.scenario, c.strategy))
                check_run(run, built[c.scenario])
            runs.append(run)
        return exp, runs

    def strategy_params(self, strategy: str) -> dict[str, Any]:
        own = catalog.lookup(strategy).params()
        shared = {k: v for k, v in self.params.get("*", {}).items() if k in own}
        return {**shared, **self.params.get(strategy, {})}

    def scenario_options_for_runs(self) -> dict[str, Any]:
        if self.orderings > 1 and "class_order" not in self.scenario_options:
            return {**self.scenario_options, "class_order": "seed"}
        return dict(self.scenario_options)

    def run_configs(self) -> list[RunConfig]:
        order_seeds = [None] if self.orderings == 1 else list(range(self.orderings))
        shared = {**self.settings(), "scenario_options": self.scenario_options_for_runs()}
        return [RunConfig(**copy.deepcopy({**shared, **self.strategy_settings.get(st, {})}), scenario=sc, strategy=st,
                          seed=seed, params=values, ordering_seed=o, variant=variant)
                for sc in self.scenarios for st in self.strategies
                for values, variant in sweep(self.strategy_params(st)) for o in order_seeds for seed in self.seeds]

    def identity(self) -> dict[str, Any]:
        """What must match for two invocations to share one experiment folder."""
        d = dataclasses.asdict(self)
        d["device_type"] = self.device.split(":")[0]
        return {k: d[k] for k in RUN_SETTINGS}


def _distinct_seeds(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seed list {seeds} repeats a seed")
    return seeds


def _distinct_names(names: list[str]) -> list[str]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} is named twice (each would run and be counted twice)")
    return names


#: the largest seed: every generator a run derives from its seed takes it (torch's take 64 bits,
#: and a run adds offsets to its seed)
MAX_SEED = 2**32 - 1
#: the most seeds one command may name (a range such as 0-99999999999 is a typo, not a sweep)
MAX_SEEDS = 10_000


def _folder_name(name: str) -> str:
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError("must be a folder name (no '/', not '.' or '..')")
    return name


Seeds = Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], Field(min_length=1, max_length=MAX_SEEDS),
                  AfterValidator(_distinct_seeds)]
Names = Annotated[list[str], Field(min_length=1), AfterValidator(_distinct_names)]


def _known_metrics(names: list[str]) -> list[str]:
    from clbench.results.tables import paper_columns

    try:
        return paper_columns(",".join(names)) or []
    except InputError as e:
        raise ValueError(str(e)) from None


ReportMetrics = Annotated[list[str], AfterValidator(_known_metrics)]
ExperimentName = Annotated[str, Field(min_length=1), AfterValidator(_folder_name)]


def sweep(params: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """A strategy's parameters with list values (``--param mem_size=200,500``, ``mem_size = [200, 500]``
    in TOML) expanded into one variant per combination: ``(values, "mem_size=500")``; without
    lists, the parameters themselves and no variant name."""
    swept = [k for k, v in params.items() if isinstance(v, list)]
    if not swept:
        return [(dict(params), None)]
    out = []
    for combo in itertools.product(*(params[k] for k in swept)):
        values = {**params, **dict(zip(swept, combo))}
        out.append((values, ",".join(f"{k}={v}" for k, v in zip(swept, combo))))
    return out


def run_dir(root: Path, config: RunConfig) -> Path:
    """runs/<scenario>/<strategy>/seed<k> (seed<k>-order<o> when the experiment varies the ordering;
    <strategy>[<variant>] in a parameter sweep), each name safe on every file system (an own
    module's ``my_data:blobs`` is ``my_data%3Ablobs``)."""
    name = f"seed{config.seed}" if config.ordering_seed is None else f"seed{config.seed}-order{config.ordering_seed}"
    strategy = config.strategy if config.variant is None else f"{config.strategy}[{config.variant}]"
    return (root / "runs" / io.path_segment(config.scenario, portable=True)
            / io.path_segment(strategy, portable=True) / name)


# ---------------------------------------------------------------- parsing helpers

def parse_seeds(text: str) -> list[int]:
    """``0,1,2``, ``0-4`` or a mix (``0-2,7``)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise InputError(f"seed range {part!r} is empty (write it low-high, e.g. {hi}-{lo})")
            if hi - lo + 1 > MAX_SEEDS:
                raise InputError(f"seed range {part!r} names {hi - lo + 1:,} seeds; at most {MAX_SEEDS:,} at once")
            seeds += range(lo, hi + 1)
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise InputError(f"bad seed {part!r}: give seeds as 0,1,2 or a range like 0-4")
    if seeds and max(seeds) > MAX_SEED:
        raise InputError(f"seed {max(seeds)} is too large: seeds go from 0 to {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"seed list {text!r} repeats a seed")
    return seeds


def parse_names(text: str, known: list[str], what: str, qualified: bool = False) -> list[str]:
    """Comma-separated names; ``all`` means every known one; with ``qualified``, names of the form
    ``a:b`` (``avalanche:EWC``, ``mypkg.module:MyStrategy``) pass, to be checked when looked up."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names == ["all"]:
        return list(known)
    bad = [n for n in names if n not in known and not (qualified and ":" in n)]
    if bad:
        plural = what[:-1] + "ies" if what.endswith("y") else what + "s"
        raise InputError(f"unknown {what} {', '.join(map(repr, bad))}; known {plural}: {', '.join(known)}")
    return names


def parse_params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``k=v`` (every strategy that has k) or ``strategy.k=v``; ``k=a,b`` sweeps (one row per value).
    Values stay strings until coerced; a parameter given twice is refused, not silently overridden."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--param {pair!r} must look like name=value or strategy.name=value")
        key, value = pair.split("=", 1)
        strategy, _, name = key.rpartition(".")
        target = out.setdefault(strategy or "*", {})
        if name.strip() in target:
            raise InputError(f"--param {key.strip()} is given twice; to run several values, give them as one "
                             f"sweep: --param {key.strip()}=a,b")
        values = [v.strip() for v in value.split(",")]
        if any(not v for v in values) and len(values) > 1:
            raise InputError(f"--param {pair!r}: an empty value in the list")
        target[name.strip()] = values if len(values) > 1 else value.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path} is not valid TOML: {e}") from None
    known = {f.name for f in dataclasses.fields(Experiment)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    for key, value in data.items():
        _strict_check(key, value, str(path))
    return data


def _strict_check(key: str, value: Any, where: str) -> None:
    """A TOML value of the type its key declares, as written: TOML has types, so ``seeds = [true]``,
    ``epochs = true`` or ``lr = "0.1"`` is a mistake to point at, not a value to convert (an
    integer where a real is declared is fine)."""
    from pydantic import ValidationError

    from clbench.common.validation import describe

    try:
        _strict_model(key).model_validate({key: value}, strict=True)
    except ValidationError as e:
        raise InputError(describe(e, where)) from None


@functools.cache
def _strict_model(key: str):
    """A model of the one field ``key`` of ``Experiment`` (its errors name the key as the others do)."""
    from pydantic import create_model

    return create_model(f"toml_{key}", **{key: (typing.get_type_hints(Experiment, include_extras=True)[key], ...)})


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(exp: Experiment) -> str:
    """experiment.toml: readable, and loadable again with ``--config``."""
    d = dataclasses.asdict(exp)
    lines, tables = [], []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in tables:
        simple = {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)}
        nested = {kk: vv for kk, vv in v.items() if isinstance(vv, dict)}
        if simple or not nested:
            lines += ["", f"[{k}]"] + [f'"{kk}" = {_toml_value(vv)}' for kk, vv in simple.items()]
        for kk, vv in nested.items():
            lines += ["", f'[{k}."{kk}"]'] + [f"{a} = {_toml_value(b)}" for a, b in vv.items() if b is not None]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- running

#: what an experiment writes in its folder: ``--force`` removes these (and only these)
EXPERIMENT_OUTPUTS = ("runs", "plots", "leaderboard.csv", "leaderboard.md", "leaderboard.tex", "runs.csv",
                      "experiment.toml")


def prepare_folder(exp: Experiment, root: Path, force: bool) -> None:
    """Refuse a folder that holds a different experiment; otherwise record this one (merged with
    the one there). ``force`` replaces the folder's experiment: its runs, leaderboard and plots go,
    so no result of other settings can end up in this experiment's rows."""
    path = root / "experiment.toml"
    if force:
        remove_outputs(root)
    if path.is_file() and not force:
        try:
            old = Experiment.from_mapping(tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, InputError, OSError):
            raise InputError(f"{root} holds an unreadable experiment.toml; "
                             "choose another --out or use --force") from None
        if old.identity() != exp.identity():
            diff = [k for k in RUN_SETTINGS if old.identity()[k] != exp.identity()[k]]
            raise InputError(f"{root} holds a different experiment (it differs in {', '.join(diff)}); "
                             "choose another --out or --name, or use --force to overwrite")
        merged = dataclasses.replace(exp, scenarios=_union(old.scenarios, exp.scenarios),
                                     strategies=_union(old.strategies, exp.strategies),
                                     seeds=_union(old.seeds, exp.seeds))
        io.atomic_write_text(path, to_toml(merged))
        return
    io.atomic_write_text(path, to_toml(exp))


#: what clbench writes under ``plots/`` (``--force`` removes these and leaves anything else): the
#: figures of ``clbench.results.plots``, named ``<scenario>_<figure>.<format>``
PLOT_NAMES = re.compile(r".+_(mean_accuracy|gap_zoom|matrix|bars|tasks_.+)\.(png|pdf|svg)")


def remove_outputs(root: Path) -> None:
    """``--force``: remove what clbench wrote in a folder that holds a clbench experiment (its
    ``experiment.toml``): the run folders under ``runs/`` (those holding a run's record), the plots
    under ``plots/``, the leaderboard. A folder without an experiment is refused with one line, and
    a file clbench did not write stays where it is."""
    outputs = [name for name in EXPERIMENT_OUTPUTS if (root / name).exists()]
    if not outputs:
        return
    if not (root / "experiment.toml").is_file():
        raise InputError(f"--force: {root} holds no clbench experiment (no experiment.toml) but has "
                         f"{', '.join(outputs)}; refusing to delete them: choose another --out")
    runs = root / "runs"
    for run in sorted(runs.glob("*/*/*")) if runs.is_dir() else []:
        if run.is_dir() and (run.name.endswith(".partial") or any((run / f).is_file() for f in RUN_RECORDS)):
            shutil.rmtree(run)
    for name in ("runs", "plots"):
        if (root / name).is_dir():
            if name == "plots":
                for plot in (root / "plots").iterdir():
                    if plot.is_file() and PLOT_NAMES.fullmatch(plot.name):
                        plot.unlink()
            _prune(root / name)
    for name in EXPERIMENT_OUTPUTS[2:]:
        (root / name).unlink(missing_ok=True)
    kept = [str(p.relative_to(root)) for name in ("runs", "plots") if (root / name).is_dir()
            for p in (root / name).rglob("*") if p.is_file()]
    if kept:
        progress.write(f"note: --force kept {len(kept)} file(s) clbench did not write, e.g. {kept[0]}")


#: the files a run folder holds whatever became of it (``run.record``, ``executors``)
RUN_RECORDS = ("config.json", "summary.json", io.ERROR_FILE)


def _prune(folder: Path) -> None:
    """Remove the empty folders under ``folder`` and ``folder`` itself if it ends up empty."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def clean_staging(root: Path) -> None:
    """Remove the staging folders (``io.staging_dir``) that killed runs left: only with the folder's
    lock held, when no other command can be filling one."""
    runs = root / "runs"
    for staging in runs.glob("*/*/.*.partial") if runs.is_dir() else []:
        shutil.rmtree(staging, ignore_errors=True)


def _union(a: list, b: list) -> list:
    return list(dict.fromkeys([*a, *b]))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during an experiment: what was kept, for the one line the CLI prints."""

    def __init__(self, root: Path, complete: int, total: int):
        super().__init__(f"{complete} of {total} runs complete in {root}")
        self.root, self.complete, self.total = root, complete, total


def check_output(root: Path) -> None:
    """Create the experiment folder, or say in one line why it cannot be."""
    if root.exists() and not root.is_dir():
        raise InputError(f"--out {root} is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = io.staging_dir(root / ".write-test")
        probe.rmdir()
    except OSError as e:
        raise InputError(f"cannot write results to {root}: {e.strerror or e}") from None


def run_experiment(exp: Experiment, root: Path, *, force: bool = False, jobs: int = 1, show_progress: bool = True,
                   on_done=None, executor=None, log: list[str] | tuple[str, ...] = (), then=None) -> dict[str, Any]:
    """Run every missing run of ``exp`` under ``root``. Everything is checked before anything is
    written; a run that fails is recorded in its folder (``error.json``) and the others go on.
    Returns counts of runs done, skipped and failed, the failures' outcomes, and the runs each Ray
    node made (``nodes``, empty for the local executors).

    ``executor(todo)`` (optional) yields an ``Outcome`` per ``(config, out)`` pair; the default is
    this process (``jobs=1``) or a local process pool. ``log`` names trackers (``clbench.results.trackers``)
    that each run is logged to as it finishes. ``then()`` (optional) runs after the runs, still
    under the folder's lock (the CLI writes the leaderboard and plots there); its result is the
    returned ``then``."""
    from clbench.results import trackers as loggers
    from clbench.sweep import executors

    loggers.check_trackers(list(log))
    exp, runs = exp.checked()
    check_output(root)
    with folder_lock(root, "clbench run"):  # one writer: no other command mixes or deletes results here
        prepare_folder(exp, root, force)
        clean_staging(root)
        configs = [r.config for r in runs]
        todo = [(r, run_dir(root, r.config)) for r in runs if force or not is_complete(run_dir(root, r.config))]
        if executor is None:
            executor = (lambda t: executors.serial(t, lambda c: _run_bar(c, show_progress))) \
                if jobs <= 1 or len(todo) <= 1 else (lambda t: executors.process_pool(t, jobs))
        overall = progress.progress(len(todo), "runs", "run", show_progress, position=0)
        failed: list[executors.Outcome] = []
        done = 0
        nodes: dict[str, int] = {}  # Ray node -> runs it made
        try:
            for outcome in map(_verified, executor(todo)):
                if outcome.node and not outcome.failed:
                    nodes[outcome.node] = nodes.get(outcome.node, 0) + 1
                overall.set_postfix_str(f"{_name(outcome.config)} {'failed' if outcome.failed else 'done'}")
                overall.update(1)
                if outcome.failed:
                    failed.append(outcome)
                    progress.write(f"error: {_name(outcome.config)} failed: {outcome.error} "
                                   f"(details in {outcome.out / executors.ERROR_FILE})")
                    continue
                done += 1
                _warn_divergence(outcome.config, outcome.summary)
                for problem in loggers.log_run(list(log), root, outcome.out):
                    progress.write(f"warning: {problem}")
                if on_done:
                    on_done(outcome.config, outcome.summary)
        except KeyboardInterrupt:
            overall.close()
            raise Interrupted(root, sum(is_complete(run_dir(root, c)) for c in configs), len(configs)) from None
        overall.close()
        return {"done": done, "skipped": len(configs) - len(todo), "failed": len(failed), "failures": failed,
                "nodes": nodes, **({"then": then()} if then else {})}


def _verified(outcome):
    """An outcome as the driver finds it: a run reported done whose folder is not complete here (a
    worker on a node that does not share ``--out``, a folder removed meanwhile) is a failed run with
    one line saying where it went, never a "done"; a failure whose record did not arrive is recorded
    here."""
    from clbench.sweep import executors

    if outcome.failed:
        if not (outcome.out / io.ERROR_FILE).is_file():
            executors.record_failure(outcome.config, outcome.out, outcome.error, "", executors.ATTEMPTS)
        return outcome
    if is_complete(outcome.out):
        return outcome
    error = (f"reported done, but its folder {outcome.out} is missing or incomplete here (written on a node that "
             "does not share --out?)")
    executors.record_failure(outcome.config, outcome.out, error, "", executors.ATTEMPTS)
    return dataclasses.replace(outcome, summary=None, error=error)


def _name(config: RunConfig) -> str:
    order = "" if config.ordering_seed is None else f" ordering {config.ordering_seed}"
    return f"{config.scenario} {config.strategy} seed {config.seed}{order}"


def _warn_divergence(config: RunConfig, summary: dict) -> None:
    if summary.get("diverged_at"):
        progress.write(f"warning: {_name(config)} diverged at iteration {summary['diverged_at']} "
                   f"({summary.get('divergence', 'see metrics.diverged_at')}); its metrics are those of a broken "
                   "model and it ranks last — lower --lr or the strategy's strength")


def _run_bar(config: RunConfig, show: bool):
    """A per-run progress bar: iteration, task, latest mean accuracy (refreshed at most 5x a second)."""
    if not show or not progress.interactive():  # a log file gets the overall lines only
        return None
    from tqdm import tqdm

    from clbench.evaluation.evaluator import Evaluator

    state = {"bar": None, "last": 0.0}

    def update(n, total, task, ev):
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=f"{config.strategy} s{config.seed}", unit="it", leave=False,
                                position=1)
        bar = state["bar"]
        now = time.monotonic()
        if now - state["last"] > 0.2 or n == total:
            state["last"] = now
            bar.set_postfix(task=task, acc=f"{Evaluator.mean_accuracy(ev):.3f}")
            bar.update(n - bar.n)
        if n == total:
            bar.close()

    return update

