"""Honest hyperparameter tuning with Ray Tune: no choice is ever made on test accuracy.

Cha et al., "Hyperparameters in Continual Learning: A Reality Check" (2024): most published
rankings do not survive a protocol that tunes on one data set and evaluates on another. Their
two-phase protocol (GTEP) tunes every algorithm in a *tuning phase* on one scenario and applies
the chosen values unchanged in an *evaluation phase* on another with the same configuration
(tasks, classes per task, setting). Two protocols here:

- ``gtep``: choose on the tuning scenario's validation split, then run the chosen values on the
  evaluation scenario's test data with fresh seeds;
- ``val``: choose on a scenario's validation split, report on its test data (fresh seeds).

Ray Tune samples the space (its random/grid generator, or its Optuna searcher) and runs each
trial (one point of the space, all tuning seeds) as a Ray actor. Every run of a trial is a clbench
run folder under ``tuning/runs``, named by the trial's values, so an interrupted tuning continues
where it stopped and repeating a finished one reads the folders instead of training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tomllib

from clbench.common import io
from clbench.common.errors import InputError
from clbench.common.io import is_complete
from clbench.common.lock import folder_lock
from clbench.run import catalog
from clbench.run.parts import build_scenario
from clbench.run.settings import RunConfig, RunSettings, per_strategy_settings, validated
from clbench.scenarios.registry import is_own, scenario_spec
from clbench.sweep.experiment import Experiment, run_dir, to_toml

#: a search space's dimension kinds: ``kind:args`` on the command line
KINDS = {"uniform": "uniform:LOW:HIGH", "loguniform": "loguniform:LOW:HIGH", "randint": "randint:LOW:HIGH (inclusive)",
         "choice": "choice:A,B,...", "grid": "grid:A,B,... (every value, crossed with the other dimensions)"}
#: metrics a selection may weigh (higher is better for each)
SELECTABLE = ("acc", "min_acc", "wc_acc", "aaa", "bwt", "lca10")
#: the space ``clbench tune`` searches when no ``--space`` is given (entries of absent strategies drop)
DEFAULT_SPACE = ("lr=loguniform:0.003:0.3", "ewc.ewc_lambda=loguniform:1:10000", "gem.memory_strength=uniform:0:1")
#: the file that says what a tuning folder holds (its identity, for resuming)
MANIFEST = "tune.toml"


@dataclass(frozen=True)
class Dimension:
    """One searched value: ``strategy`` ("*": every strategy that has it), name, kind and its values."""

    strategy: str
    name: str
    kind: str
    values: tuple

    def text(self) -> str:
        head = self.name if self.strategy == "*" else f"{self.strategy}.{self.name}"
        sep = "," if self.kind in ("choice", "grid") else ":"
        return f"{head}={self.kind}:{sep.join(map(str, self.values))}"

    def candidates(self) -> list:
        """Values that must all be valid for the dimension to be: the ends of a range, every choice."""
        return list(self.values)

    def domain(self):
        from ray import tune

        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "randint":
            return tune.randint(self.values[0], self.values[1] + 1)
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return tune.grid_search(list(self.values))


def parse_space(text: str) -> Dimension:
    """``[strategy.]name=kind:args``, e.g. ``ewc.ewc_lambda=loguniform:1:1e5``, ``lr=choice:0.01,0.05``."""
    key, eq, spec = text.partition("=")
    kind, colon, args = spec.partition(":")
    if not eq or not colon or kind not in KINDS:
        raise InputError(f"--space {text!r} must look like [strategy.]name=KIND:ARGS with KIND one of: "
                         + "; ".join(KINDS.values()))
    strategy, _, name = key.strip().rpartition(".")
    if kind in ("choice", "grid"):
        values = tuple(_value(v) for v in args.split(",") if v.strip())
        if not values:
            raise InputError(f"--space {text!r}: {kind} needs at least one value")
        return Dimension(strategy or "*", name, kind, values)
    parts = args.split(":")
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise InputError(f"--space {text!r}: {KINDS[kind]} with finite LOW < HIGH")
    if kind == "loguniform" and lo <= 0:
        raise InputError(f"--space {text!r}: loguniform needs 0 < LOW")
    if kind == "randint":
        if lo != int(lo) or hi != int(hi):
            raise InputError(f"--space {text!r}: randint needs whole numbers")
        lo, hi = int(lo), int(hi)
    return Dimension(strategy or "*", name, kind, (lo, hi))


def _value(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_selection(text: str) -> dict[str, float]:
    """``acc``, ``min-acc``, ``wc-acc`` or ``mix:acc=0.5,wc-acc=0.5``: weights of validation metrics."""
    text = text.strip()
    if text.startswith("mix:"):
        weights = {}
        for part in text[4:].split(","):
            name, eq, w = part.partition("=")
            try:
                weights[_metric(name)] = float(w)
            except ValueError:
                raise InputError(f"--select {text!r}: write mix:METRIC=WEIGHT,... (e.g. mix:acc=0.5,wc-acc=0.5)"
                                 ) from None
        if not weights or not all(math.isfinite(w) and w >= 0 for w in weights.values()) or not sum(weights.values()):
            raise InputError(f"--select {text!r}: weights must be finite, non-negative and not all 0")
        return weights
    return {_metric(text): 1.0}


def _metric(name: str) -> str:
    m = name.strip().replace("-", "_").lower()
    if m not in SELECTABLE:
        raise InputError(f"cannot select on {name.strip()!r}; choose from {', '.join(SELECTABLE)} or mix:...")
    return m


def selection_score(summary: dict[str, Any], weights: dict[str, float]) -> float:
    """The weighted selection metric of one run (higher is better)."""
    return float(sum(w * float(summary[m]) for m, w in weights.items()))


def selection_name(weights: dict[str, float]) -> str:
    return "+".join(m if w == 1 else f"{w:g}*{m}" for m, w in weights.items())


# ---------------------------------------------------------------- the request

@dataclass
class Tuning:
    """A tuning request: the base experiment (strategies, tuning seeds, shared settings), where to
    tune and evaluate, the space, the search and the selection."""

    experiment: Experiment
    tune_on: str = "split-digits"
    evaluate_on: str | None = None
    protocol: Literal["gtep", "val"] | None = None
    space: list[Dimension] = field(default_factory=list)
    samples: int = 8
    search: Literal["random", "grid", "optuna"] = "random"
    select: dict[str, float] = field(default_factory=lambda: {"acc": 1.0})
    eval_seeds: list[int] | None = None

    def checked(self) -> Tuning:
        """The request with its defaults resolved, every value checked before anything runs."""
        t = dataclasses.replace(self)
        t.evaluate_on = t.evaluate_on or t.tune_on
        t.protocol = t.protocol or ("gtep" if t.evaluate_on != t.tune_on else "val")
        if t.protocol == "gtep" and t.evaluate_on == t.tune_on:
            raise InputError("--protocol gtep evaluates on another scenario than it tunes on: give --evaluate-on")
        if t.protocol == "val" and t.evaluate_on != t.tune_on:
            raise InputError("--protocol val tunes and evaluates on one scenario; drop --evaluate-on or use gtep")
        if float(t.experiment.val_fraction) == 0.0:
            raise InputError("tuning chooses on a validation split: --val-fraction must be > 0")
        if t.samples < 1:
            raise InputError(f"--samples must be at least 1, not {t.samples}")
        if t.protocol == "gtep":
            t.experiment = same_training(t.experiment, t.tune_on)
        seeds = t.experiment.seeds
        t.eval_seeds = t.eval_seeds or list(range(max(seeds) + 1, max(seeds) + 1 + len(seeds)))
        if set(t.eval_seeds) & set(seeds):
            raise InputError(f"evaluation seeds {t.eval_seeds} must be fresh: they overlap the tuning seeds {seeds}")
        if not t.space:  # the default space's entries for strategies not being tuned drop out
            t.space = [d for d in map(parse_space, DEFAULT_SPACE)
                       if d.strategy == "*" or d.strategy in t.experiment.strategies]
        for d in t.space:
            if d.strategy != "*" and d.strategy not in t.experiment.strategies:
                raise InputError(f"--space {d.text()}: strategy {d.strategy} is not being tuned")
            if not any(self._applies(d, s) for s in t.experiment.strategies):
                raise InputError(f"--space {d.text()}: no tuned strategy has a parameter {d.name!r} "
                                 f"(run settings: {', '.join(per_strategy_settings())})")
        if t.search == "grid" and any(d.kind not in ("choice", "grid") for d in t.space):
            raise InputError("--search grid needs every --space dimension to be choice: or grid:")
        if t.search == "optuna":
            try:
                import optuna  # noqa: F401
            except ImportError:
                raise InputError("--search optuna needs Optuna: pip install optuna") from None
            if any(d.kind == "grid" for d in t.space):
                raise InputError("--search optuna samples; use choice: instead of grid:")
        for s in t.experiment.strategies:  # every value the search may draw must be valid
            for d in t.dimensions(s):
                for v in d.candidates():
                    if d.name in per_strategy_settings():
                        validated(RunSettings, {**t.experiment.settings(), d.name: v}, f"--space {d.text()}")
                    else:
                        catalog.lookup(s).coerce({d.name: v})
        # each phase checked as its trials run it: with a value of every searched parameter (a
        # strategy may have no default for one, as Avalanche's EWC for ewc_lambda)
        drawn = {s: {d.name: d.candidates()[0] for d in t.dimensions(s)} for s in t.experiment.strategies}
        t.phase_experiment("tune", drawn).validate()
        t.phase_experiment("evaluate", drawn).validate()
        if t.protocol == "gtep":
            _same_configuration(t.phase_experiment("tune").run_configs()[0],
                                t.phase_experiment("evaluate").run_configs()[0])
        return t

    @staticmethod
    def _applies(d: Dimension, strategy: str) -> bool:
        if d.strategy not in ("*", strategy):
            return False
        return d.name in per_strategy_settings() or d.name in catalog.lookup(strategy).params()

    def dimensions(self, strategy: str) -> list[Dimension]:
        """The dimensions searched for ``strategy`` (a strategy-specific one overrides a shared one)."""
        dims = {d.name: d for d in self.space if d.strategy == "*" and self._applies(d, strategy)}
        dims.update({d.name: d for d in self.space if d.strategy == strategy and self._applies(d, strategy)})
        return list(dims.values())

    def phase_experiment(self, phase: str, chosen: dict[str, dict[str, Any]] | None = None) -> Experiment:
        """The tuning phase (tuning scenario, validation split, tuning seeds) or the evaluation phase
        (evaluation scenario, test data, fresh seeds, the chosen values)."""
        exp = self.experiment
        params = {k: dict(v) for k, v in exp.params.items()}
        settings: dict[str, dict[str, Any]] = {}
        for s, values in (chosen or {}).items():
            own, mine = split_values(values)
            if own:
                params[s] = {**params.get(s, {}), **own}
            if mine:
                settings[s] = mine
        exp = dataclasses.replace(exp, params=params, strategy_settings=settings)
        if phase == "tune":
            return dataclasses.replace(exp, scenarios=[self.tune_on], eval_on="val", name="tuning")
        return dataclasses.replace(exp, scenarios=[self.evaluate_on], eval_on="test", seeds=list(self.eval_seeds),
                                   name="evaluation")

    def manifest(self) -> dict[str, Any]:
        """What must match for a second invocation to continue this tuning (what the tables show,
        ``metrics``, changes no run: left out)."""
        experiment = {k: v for k, v in dataclasses.asdict(self.experiment).items() if k != "metrics"}
        return {"experiment": json.loads(to_json(experiment)),
                "tune_on": self.tune_on, "evaluate_on": self.evaluate_on, "protocol": self.protocol,
                "space": [d.text() for d in self.space], "samples": self.samples, "search": self.search,
                "select": self.select, "eval_seeds": self.eval_seeds}


#: what GTEP carries from the tuning phase into the evaluation phase besides the chosen values: the
#: training configuration those values were chosen under (Cha et al. keep it the same in both)
TRAINING = ("batch_size", "epochs", "iterations", "optimizer", "momentum", "lr")


def same_training(exp: Experiment, tune_on: str) -> Experiment:
    """``exp`` with every training setting it leaves to the scenario (``TRAINING``) set to the
    tuning scenario's, so the evaluation phase trains as the tuning phase did (an lr chosen with
    batch 32 and 10 epochs is not evaluated with batch 256 and 1 epoch). What the user set stays."""
    if is_own(tune_on):
        return exp
    train = scenario_spec(tune_on).train
    changes = {k: train[k] for k in ("batch_size", "optimizer", "momentum", "lr")
               if getattr(exp, k) is None and train.get(k) is not None}
    if exp.epochs is None and exp.iterations is None:
        changes.update(epochs=train.get("epochs"), iterations=train.get("iterations"))
    return dataclasses.replace(exp, **changes)


def to_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _same_configuration(a: RunConfig, b: RunConfig) -> None:
    """GTEP's two scenarios must share their configuration: tasks, classes per task, setting."""
    sa, sb = build_scenario(a), build_scenario(b)
    shape_a = (len(sa.tasks), [len(t.classes) for t in sa.tasks], sa.setting)
    shape_b = (len(sb.tasks), [len(t.classes) for t in sb.tasks], sb.setting)
    if shape_a != shape_b:
        raise InputError(f"GTEP needs the same scenario configuration in both phases: {a.scenario} has "
                         f"{shape_a[0]} tasks of {shape_a[1]} classes ({shape_a[2]}), {b.scenario} "
                         f"{shape_b[0]} tasks of {shape_b[1]} classes ({shape_b[2]})")


# ---------------------------------------------------------------- trials

def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Searched values as (strategy parameters, the strategy's own optimiser settings)."""
    return ({k: v for k, v in values.items() if k not in per_strategy_settings()},
            {k: v for k, v in values.items() if k in per_strategy_settings()})


def trial_key(strategy: str, values: dict[str, Any]) -> str:
    """The folder name of a trial: its values, hashed (the same values always map to one folder)."""
    return "trial-" + hashlib.sha1(to_json({"strategy": strategy, **values}).encode()).hexdigest()[:10]


def trial_configs(exp: Experiment, strategy: str, values: dict[str, Any]) -> list[RunConfig]:
    """The runs of one trial: ``strategy`` with ``values`` on the tuning phase's scenario, each tuning seed."""
    own, mine = split_values(values)
    exp = dataclasses.replace(exp, strategies=[strategy], params={
        **exp.params, strategy: {**exp.params.get(strategy, {}), **own}},
        strategy_settings={strategy: mine} if mine else {})
    return exp.run_configs()


def trial_dir(root: Path, config: RunConfig, key: str) -> Path:
    return (root / "tuning" / "runs" / io.path_segment(config.scenario, portable=True)
            / io.path_segment(config.strategy, portable=True) / key
            / run_dir(Path("."), config).name)


#: the key of a trial's result that carries the files of the run folders it made (popped by the driver)
FILES = "clbench_run_files"


def completed_runs(root: Path, exp: Experiment, strategy: str) -> dict[str, dict[str, Any]]:
    """On the driver: the summaries of ``strategy``'s complete trial runs under ``root``, by folder
    relative to ``root``. A trial runs on any node, which need not see ``root``: it is told which of
    its runs exist instead of looking."""
    base = root / "tuning" / "runs" / io.path_segment(exp.scenarios[0], portable=True) / io.path_segment(
        strategy, portable=True)
    return {str(folder.parent.relative_to(root)): io.read_json(folder)
            for folder in sorted(base.glob("trial-*/*/summary.json")) if is_complete(folder.parent)}


def trial_scores(exp: Experiment, strategy: str, values: dict[str, Any], weights: dict[str, float],
                 done: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, bytes]]]:
    """Every tuning seed of one trial, each a clbench run folder: the mean selection score on the
    validation split and each seed's, and the files of the runs made here (by folder relative to
    the tuning's root; runs in ``done`` are read from it, not made again). The runs are made in a
    temporary folder of this node (``executors.run_elsewhere``); a run that fails fails the trial."""
    from clbench.sweep.executors import run_elsewhere

    key = trial_key(strategy, values)
    scores, diverged, made = {}, 0, {}
    for config in trial_configs(exp, strategy, values):
        rel = str(trial_dir(Path("."), config, key))
        summary = done.get(rel)
        if summary is None:
            outcome, files = run_elsewhere(config)
            if outcome.failed:
                raise RuntimeError(outcome.error)
            summary, made[rel] = outcome.summary, files
        scores[f"seed{config.seed}"] = selection_score(summary, weights)
        diverged += summary.get("diverged_at") is not None
    return {"score": float(np.mean(list(scores.values()))), **scores, "diverged": diverged, "trial": key}, made


def write_trial_runs(root: Path, made: dict[str, dict[str, bytes]]) -> None:
    """On the driver: the run folders a trial made, written under ``root`` as the executors write theirs."""
    from clbench.sweep.executors import write_folder

    runs = (root / "tuning" / "runs").resolve()
    for rel, files in made.items():
        out = root / rel
        if runs not in out.resolve().parents:  # a name from the wire stays inside the tuning's runs
            raise RuntimeError(f"a trial sent a run folder outside {runs}: {rel!r}")
        write_folder(out, files)


def run_trial(values: dict[str, Any], *, exp: Experiment, strategy: str, weights: dict[str, float],
              done: dict[str, dict[str, Any]]) -> None:
    """A Ray Tune trial (function trainable, on any node): ``trial_scores`` reported to Tune, with the
    files of its runs, which the driver's callback writes into the tuning's folder."""
    from ray import tune

    scores, made = trial_scores(exp, strategy, values, weights, done)
    tune.report({**scores, FILES: made})


def _quiet_tune() -> None:
    """Ray Tune's own tables and logs would bury clbench's progress bar; clbench reports the trials."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C stops clbench tune, as it stops run
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def search_strategy(t: Tuning, strategy: str):
    """Ray Tune's search over ``strategy``'s dimensions: (param_space, search_alg, num_samples)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    dims = t.dimensions(strategy)
    seed = t.experiment.seeds[0]
    if t.search == "grid":
        space = {d.name: Dimension(d.strategy, d.name, "grid", d.values).domain() for d in dims}
        return space, BasicVariantGenerator(random_state=seed), 1
    space = {d.name: d.domain() for d in dims}
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return space, OptunaSearch(seed=seed), t.samples
    return space, BasicVariantGenerator(random_state=seed), t.samples


def tune_strategy(t: Tuning, strategy: str, root: Path, cpus: float, gpus: float, show_progress: bool
                  ) -> list[dict[str, Any]]:
    """Tune one strategy; one row per (trial, seed) for tuning.csv."""
    _quiet_tune()
    from ray import tune

    from clbench.common.progress import progress

    exp = t.phase_experiment("tune")
    space, search, samples = search_strategy(t, strategy)
    done = completed_runs(root, exp, strategy)
    if not space:  # nothing to search for this strategy: its defaults are the one trial, made here
        scores, made = trial_scores(exp, strategy, {}, t.select, done)
        write_trial_runs(root, made)
        return _rows(t, strategy, [({}, scores, None)])
    grid_points = math.prod(len(d.values) for d in t.dimensions(strategy) if d.kind == "grid" or t.search == "grid")
    bar = progress(samples * grid_points, f"tuning {strategy}", "trial", show_progress)

    class Progress(tune.Callback):
        best = -math.inf

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # the trial's run folders, written here and dropped from what Tune keeps of the result
            write_trial_runs(root, result.pop(FILES, {}))
            Progress.best = max(Progress.best, result.get("score", -math.inf))
            bar.update(1)
            bar.set_postfix_str(f"best validation {selection_name(t.select)} {Progress.best:.4f}")

        def on_trial_error(self, iteration, trials, trial, **info):
            bar.update(1)

    storage = (root / "tuning" / ".ray").resolve()
    shutil.rmtree(storage / strategy, ignore_errors=True)  # Tune's bookkeeping; the run folders are the state
    trainable = tune.with_resources(tune.with_parameters(run_trial, exp=exp, strategy=strategy,
                                                         weights=t.select, done=done),
                                    {"cpu": cpus, "gpu": gpus})
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(num_samples=samples, search_alg=search, metric="score",
                                                   mode="max", reuse_actors=True),
                       run_config=tune.RunConfig(name=strategy, storage_path=str(storage), verbose=0,
                                                 callbacks=[Progress()],
                                                 failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    bar.close()
    shutil.rmtree(storage, ignore_errors=True)
    trials = []
    for r in grid:
        values = {k: v for k, v in (r.config or {}).items() if k in space}
        error = None if r.error is None else str(r.error).strip().splitlines()[-1][:300]
        trials.append((values, None if r.error else r.metrics, error))
    return _rows(t, strategy, trials)


def _rows(t: Tuning, strategy: str, trials: list[tuple[dict, dict | None, str | None]]) -> list[dict[str, Any]]:
    name = selection_name(t.select)
    rows, seen = [], set()
    for values, metrics, error in trials:
        key = trial_key(strategy, values)
        if key in seen:  # the search drew the same point twice (a small choice space): one trial, one row per seed
            continue
        seen.add(key)
        for seed in t.experiment.seeds:
            score = metrics.get(f"seed{seed}") if metrics else None
            rows.append({"strategy": strategy, "trial": key, **{f"param.{k}": v for k, v in values.items()},
                         "seed": seed, f"val_{name}": score,
                         "trial_mean": metrics.get("score") if metrics else None,
                         "diverged": metrics.get("diverged", 0) if metrics else 0, "error": error or ""})
    return rows


def choose(table: pd.DataFrame, t: Tuning) -> dict[str, dict[str, Any]]:
    """Per strategy, the values of the trial with the best mean validation score (the first such
    trial on a tie) among those none of whose runs diverged (a broken model's score is not a
    result): the only place a choice is made, and it sees no test accuracy."""
    chosen = {}
    for strategy, g in table.groupby("strategy", sort=False):
        ok = g.dropna(subset=["trial_mean"])
        if ok.empty:
            raise InputError(f"every trial of {strategy} failed: {g['error'].iloc[0]}")
        ok = ok[ok.get("diverged", pd.Series(0, index=ok.index)).fillna(0) == 0]
        if ok.empty:
            raise InputError(f"every trial of {strategy} DIVERGED in at least one seed; narrow --space "
                             "(a lower learning rate?)")
        best = ok.loc[ok["trial_mean"].idxmax()]
        chosen[strategy] = {d.name: _as_drawn(best[f"param.{d.name}"], d) for d in t.dimensions(strategy)}
    return chosen


def _as_drawn(v: Any, d: Dimension) -> Any:
    """A value read back from the table (a float in a column with gaps) as the dimension draws it."""
    v = v.item() if isinstance(v, np.generic) else v
    if d.kind == "randint" or (d.kind in ("choice", "grid") and all(type(x) is int for x in d.values)):
        return int(v)
    if d.kind in ("choice", "grid") and all(type(x) is bool for x in d.values):
        return v if isinstance(v, bool) else str(v).lower() == "true"
    return v


def ranks(table: pd.DataFrame, lb: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """The evaluation leaderboard with each strategy's tuning-phase score and rank (best trial's mean
    validation score) beside its evaluation-phase score and rank (the same metric on test): a rank
    that changes is Cha et al.'s finding."""
    best = table.groupby("strategy", sort=False)["trial_mean"].max()
    lb = lb.copy()
    lb["tune_score"] = lb["strategy"].map(best)
    lb["eval_score"] = sum(w * lb[f"{m}_mean"] for m, w in weights.items())
    lb["tune_rank"] = lb["tune_score"].rank(ascending=False, method="min").astype("Int64")
    lb["eval_rank"] = lb["eval_score"].rank(ascending=False, method="min").astype("Int64")
    return lb


def rank_table(lb: pd.DataFrame, t: Tuning) -> str:
    name = selection_name(t.select)
    lines = [f"{'strategy':<16} {'tune rank':>9} {'eval rank':>9} {'val ' + name + ' (' + t.tune_on + ')':>28} "
             f"{'test ' + name + ' (' + t.evaluate_on + ')':>28}"]
    for r in lb.sort_values("eval_rank").itertuples():
        label = r.label + (f" DIVERGED {r.n_diverged}/{r.n_runs}" if getattr(r, "n_diverged", 0) else "")
        lines.append(f"{label:<16} {r.tune_rank:>9} {r.eval_rank:>9} {100 * r.tune_score:>28.2f} "
                     f"{100 * r.eval_score:>28.2f}")
    return "\n".join(lines)


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(tomllib.loads(path.read_text())["request"])
    except (tomllib.TOMLDecodeError, KeyError, json.JSONDecodeError):
        raise InputError(f"{path} is unreadable; choose another --out or use --force") from None


def write_manifest(root: Path, t: Tuning) -> None:
    body = json.dumps(t.manifest(), sort_keys=True).replace("\\", "\\\\").replace('"', '\\"')
    io.atomic_write_text(root / MANIFEST, "# the tuning this folder holds (clbench tune); do not edit\n"
                                          f'request = "{body}"\n')


def write_chosen(root: Path, t: Tuning, exp: Experiment) -> None:
    """chosen.toml: the evaluation phase as an experiment, reloadable with ``clbench run --config``."""
    head = (f"# chosen by clbench tune ({t.protocol}): validation {selection_name(t.select)} on {t.tune_on}, "
            f"seeds {t.experiment.seeds}; no test accuracy was looked at.\n"
            f"# Runs the evaluation phase again: clbench run --config chosen.toml\n")
    io.atomic_write_text(root / "chosen.toml", head + to_toml(exp))


# ---------------------------------------------------------------- the two phases

def tune_and_evaluate(t: Tuning, root: Path, *, force: bool = False, address: str | None = None,
                      cpus_per_run: float | None = None, gpus_per_run: float | None = None,
                      show_progress: bool = True, plots: bool = True) -> dict[str, Any]:
    """Tuning phase (Ray Tune, validation split), the choice, then the evaluation phase (Ray tasks,
    test data, fresh seeds). Writes tuning.csv, chosen.toml and evaluation/ (an experiment folder
    whose leaderboard has both phases' ranks). Resumes from the run folders; a finished tuning is
    read back without starting Ray."""
    from clbench.sweep.experiment import check_output

    t = t.checked()
    check_output(root)
    with folder_lock(root, "clbench tune"):  # one writer: no other command mixes or deletes trials here
        return _tune_and_evaluate(t, root, force=force, address=address, cpus_per_run=cpus_per_run,
                                  gpus_per_run=gpus_per_run, show_progress=show_progress, plots=plots)


#: what a tuning writes in its folder: ``--force`` removes these, in a folder that holds a tuning
TUNING_OUTPUTS = ("tuning", "evaluation", "tuning.csv", "chosen.toml", MANIFEST)


def _tune_and_evaluate(t: Tuning, root: Path, *, force: bool, address: str | None, cpus_per_run: float | None,
                       gpus_per_run: float | None, show_progress: bool, plots: bool) -> dict[str, Any]:
    from clbench.common.imports import own_modules
    from clbench.results.leaderboard import write_leaderboard
    from clbench.sweep import executors
    from clbench.sweep.experiment import run_experiment

    old = read_manifest(root) if not force else None
    if old is not None and old != t.manifest():
        diff = [k for k in t.manifest() if old.get(k) != t.manifest()[k]]
        raise InputError(f"{root} holds a different tuning (it differs in {', '.join(diff)}); choose another --out "
                         "or use --force to start it again")
    if force:
        present = [name for name in TUNING_OUTPUTS if (root / name).exists()]
        if present and not (root / MANIFEST).is_file():
            raise InputError(f"--force: {root} holds no clbench tuning (no {MANIFEST}) but has {', '.join(present)}; "
                             "refusing to delete them: choose another --out")
    if old is not None and (finished := _finished(t, root)) is not None:
        return finished
    cpus = cpus_per_run or t.experiment.threads
    gpus = gpus_per_run if gpus_per_run is not None else (1 if t.experiment.device.startswith("cuda") else 0)
    rows: list[dict[str, Any]] = []
    modules = own_modules([t.tune_on, t.evaluate_on, *t.experiment.strategies])
    with executors.ray_session(address, modules):
        executors.check_resources(cpus, gpus)  # before anything is written or deleted
        if force:
            for name in TUNING_OUTPUTS:
                path = root / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        write_manifest(root, t)
        for strategy in t.experiment.strategies:
            rows += tune_strategy(t, strategy, root, cpus, gpus, show_progress)
            io.write_csv(root / "tuning.csv", pd.DataFrame(rows), exact=True)
        table = pd.DataFrame(rows)
        chosen = choose(table, t)
        exp = t.phase_experiment("evaluate", chosen)
        write_chosen(root, t, exp)
        counts = run_experiment(exp, root / "evaluation", show_progress=show_progress,
                                executor=lambda todo: executors.ray_tasks(todo, cpus, gpus))
    lb = write_leaderboard([root / "evaluation"], root / "evaluation")
    lb = ranks(table, lb, t.select)
    io.write_csv(root / "evaluation" / "leaderboard.csv", lb)
    md = root / "evaluation" / "leaderboard.md"
    io.atomic_write_text(md, md.read_text() + f"\n## Tuning ({t.protocol})\n\nChosen on {t.tune_on}'s validation split "
                         f"(seeds {t.experiment.seeds}), evaluated on {t.evaluate_on}'s test data (seeds "
                         f"{t.eval_seeds}); scores in percent.\n\n```\n{rank_table(lb, t)}\n```\n")
    if plots and not lb.empty and (lb["n_seeds"] > 0).any():
        from clbench.results.plots import plot_all

        plot_all([root / "evaluation"], root / "evaluation" / "plots")
    return {"tuning": t, "table": table, "chosen": chosen, "leaderboard": lb, "counts": counts}


def _finished(t: Tuning, root: Path) -> dict[str, Any] | None:
    """A tuning whose every phase is complete, read back (no Ray, no training); None otherwise."""
    from clbench.results.folders import read_result

    if not (root / "tuning.csv").is_file() or not (root / "evaluation" / "leaderboard.csv").is_file():
        return None
    table = read_result(root / "tuning.csv", pd.read_csv)
    if set(table["strategy"]) != set(t.experiment.strategies):
        return None
    chosen = choose(table, t)
    exp = t.phase_experiment("evaluate", chosen)
    if not all(is_complete(run_dir(root / "evaluation", c)) for c in exp.run_configs()):
        return None
    lb = read_result(root / "evaluation" / "leaderboard.csv", pd.read_csv)
    if "eval_rank" not in lb:
        return None
    return {"tuning": t, "table": table, "chosen": chosen, "leaderboard": lb,
            "counts": {"done": 0, "skipped": len(exp.run_configs()), "failed": 0, "failures": []}}
