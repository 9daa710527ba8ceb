"""The ``clbench`` command line: run, tune, report, plot, list."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import click

from clbench.common.errors import InputError


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for item in values for v in item.split(",") if v.strip()]


def _commit_suffix() -> str:
    from clbench.common.provenance import provenance

    p = provenance()
    return f" (commit {p['commit'][:12]}{', modified' if p['dirty'] else ''})" if p["commit"] else ""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clbench", prog_name="clbench",
                      message="%(prog)s %(version)s" + _commit_suffix())
def cli() -> None:
    """clbench: which continual-learning strategy forgets least, and how badly does it dip while it learns?"""


def _setting_option(f: dataclasses.Field):
    """The click option of a declared setting (``clbench.run.settings.setting``): its name, type and
    help come from the declaration."""
    import types
    import typing

    from clbench.run.settings import setting_types

    hint = setting_types()[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    flag = "--" + f.name.replace("_", "-")
    if hint is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", default=None, help=f.metadata["help"])
    if typing.get_origin(hint) is typing.Literal:
        kind = click.Choice([str(v) for v in typing.get_args(hint)])
    else:
        kind = hint if hint in (int, float) else str
    return click.option(flag, type=kind, help=f.metadata["help"])


def _settings_options(exclude: tuple[str, ...] = ()):
    """The options that describe how runs train and evaluate, shared by ``run`` and ``tune``: what
    the experiment runs, then one option per declared run setting."""
    from clbench.run.settings import declared_settings

    def decorate(f):
        options = [
            click.option("--strategy", "strategies_", multiple=True,
                         help="strategy name(s), comma-separated, 'all', avalanche:NAME or package.module:Class"),
            click.option("--seeds", help="seeds: 0,1,2 or 0-4 [0,1,2]"),
            click.option("--seed", type=int, help="a single seed (same as --seeds K)"),
            click.option("--param", "params", multiple=True,
                         help="strategy parameter: name=value or strategy.name=value"),
            click.option("--setting", type=click.Choice(["class-il", "task-il", "domain-il"]),
                         help="override the setting"),
            click.option("--class-order", help="fixed, seed, or a comma-separated list of classes"),
            click.option("--n-tasks", type=int, help="number of tasks (split/permuted scenarios)"),
            click.option("--ordering-param", "ordering_params", multiple=True, help="ordering parameter name=value"),
            *(_setting_option(s) for s in declared_settings() if s.metadata["cli"] and s.name not in exclude),
            click.option("--quiet", is_flag=True, help="no progress bars"),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _plot_options(f):
    f = click.option("--dpi", type=click.IntRange(10, 2000), default=110, show_default=True,
                     help="resolution of png plots")(f)
    return click.option("--plot-format", default="png", show_default=True,
                        help="plot file formats, comma-separated: png, pdf, svg (vector graphics for a paper)")(f)


def _plot_style(plot_format: str, dpi: int) -> dict:
    from clbench.results.plots import plot_formats

    return {"formats": plot_formats(plot_format), "dpi": dpi}


def _executor_options(f):
    """Where the runs go: the local process pool or Ray (``run`` and ``tune``)."""
    options = [
        click.option("--address", help="join the Ray cluster at ADDR (auto, HOST:PORT, ray://HOST:10001) "
                     "[start a local Ray instance]"),
        click.option("--cpus-per-run", type=click.FloatRange(min=0, min_open=True),
                     help="Ray: CPUs each run holds [--threads]"),
        click.option("--gpus-per-run", type=click.FloatRange(min=0),
                     help="Ray: GPUs each run holds (fractions share one) [1 with --device cuda, else 0]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def experiment_from_options(base, opts: dict, scenarios_: list[str] | None = None):
    """The experiment ``base`` with the command line's settings applied, every value checked."""
    from clbench.common.validation import coerce_value
    from clbench.run import catalog
    from clbench.run.settings import declared_settings
    from clbench.sweep.experiment import Experiment, parse_names, parse_params, parse_seeds

    changes: dict = {}
    if scenarios_:
        changes["scenarios"] = scenarios_
    base_params, base_own = base.params, base.strategy_settings
    if opts.get("strategies_"):
        changes["strategies"] = parse_names(",".join(_split(opts["strategies_"])), catalog.known_names(), "strategy",
                                            qualified=True)
        # the strategies a preset or file sets up but this command leaves out take their settings along
        base_params = {k: v for k, v in base.params.items() if k in changes["strategies"]}
        base_own = {k: v for k, v in base.strategy_settings.items() if k in changes["strategies"]}
        changes["params"], changes["strategy_settings"] = base_params, base_own
    if opts.get("seeds") is not None and opts.get("seed") is not None:
        raise InputError("give either --seeds or --seed, not both")
    if opts.get("seeds") is not None:
        changes["seeds"] = parse_seeds(opts["seeds"])
    if opts.get("seed") is not None:
        changes["seeds"] = [opts["seed"]]
    if opts.get("params"):
        merged = {k: dict(v) for k, v in base_params.items()}
        for k, v in parse_params(list(opts["params"])).items():
            merged.setdefault(k, {}).update(v)
        changes["params"] = merged
    sc_opts = dict(base.scenario_options)
    if opts.get("setting"):
        sc_opts["setting"] = opts["setting"]
    if opts.get("class_order") is not None:
        sc_opts["class_order"] = _class_order(opts["class_order"])
    if opts.get("n_tasks") is not None:
        sc_opts["n_tasks"] = opts["n_tasks"]
    changes["scenario_options"] = sc_opts
    if opts.get("ordering_params"):
        op = {}
        for pair in opts["ordering_params"]:
            if "=" not in pair:
                raise InputError(f"--ordering-param {pair!r} must look like name=value")
            k, v = pair.split("=", 1)
            op[k.strip()] = coerce_value(k, v.strip(), None)
        changes["ordering_params"] = op
    for key in (*(s.name for s in declared_settings() if s.metadata["cli"]), "orderings", "name"):
        if opts.get(key) is not None:
            changes[key] = opts[key]
    # a task's length is epochs or iterations: the one given here replaces the other of a preset or file
    if opts.get("iterations") is not None and opts.get("epochs") is None:
        changes["epochs"] = None
    if opts.get("epochs") is not None and opts.get("iterations") is None:
        changes["iterations"] = None
    return Experiment.from_mapping({**dataclasses.asdict(base), **changes}, "")


def make_executor(kind: str, exp, jobs: int | None, address: str | None, cpus_per_run: float | None,
                  gpus_per_run: float | None, stack: contextlib.ExitStack):
    """``None`` (run_experiment's local default: this process or a pool of ``jobs``) or Ray tasks on
    a Ray session entered on ``stack``."""
    ray_only = {"--address": address, "--cpus-per-run": cpus_per_run, "--gpus-per-run": gpus_per_run}
    if kind != "ray":
        given = [k for k, v in ray_only.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} need --executor ray")
        return None
    if jobs is not None:
        raise InputError("--jobs is for the local executor; Ray runs as many runs as the cluster's CPUs hold "
                         "(--cpus-per-run each)")
    from clbench.common.imports import own_modules
    from clbench.sweep import executors

    modules = own_modules([*exp.scenarios, *exp.strategies])
    stack.enter_context(executors.ray_session(address, modules))
    cpus = cpus_per_run or exp.threads
    gpus = gpus_per_run if gpus_per_run is not None else (1 if exp.device.startswith("cuda") else 0)
    executors.check_resources(cpus, gpus)  # before anything is written
    return lambda todo: executors.ray_tasks(todo, cpus, gpus)


@cli.command()
@click.option("--scenario", "scenarios_", multiple=True,
              help="scenario name(s), comma-separated, or package.module:function [split-digits]")
@_settings_options()
@click.option("--orderings", type=int, help="repeat over K seeded orderings (class order + stream); "
              "the leaderboard gains the spread across them")
@click.option("--config", "config_path", type=click.Path(), help="experiment.toml describing the experiment")
@click.option("--preset", "preset_name", help="a paper's settings by name (clbench list presets); other options "
              "override them")
@click.option("--name", help="experiment name (folder under results/)")
@click.option("--out", type=click.Path(), help="experiment folder [results/<name>]")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              help="local: this machine's process pool; ray: one Ray task per run, on a local instance or the "
              "cluster at --address [local]")
@click.option("--jobs", type=click.IntRange(min=1),
              help="local executor: runs in parallel processes [on CPU: the cores here // --threads; on GPU: 1]; "
              "any value gives the same numbers")
@_executor_options
@click.option("--force", is_flag=True, help="replace the folder's experiment: its runs, leaderboard and plots are "
              "deleted, then every run is done again")
@click.option("--plots/--no-plots", default=True, help="draw the plots at the end")
@_plot_options
@click.option("--log", "trackers", multiple=True, help="also log each finished run to tensorboard, wandb (offline "
              "unless WANDB_MODE says otherwise) or mlflow; comma-separated or repeated")
def run(scenarios_, config_path, preset_name, out, executor, jobs, address, cpus_per_run, gpus_per_run, force, plots,
        plot_format, dpi, trackers, **opts):
    """Run an experiment (with no options: the default benchmark on split-digits, offline).

    Completed runs are skipped, so running the same command again resumes an interrupted experiment.
    """
    from clbench.sweep.processes import default_jobs, start_worker_server

    if executor == "local" and jobs != 1 and (opts.get("device") or "cpu").startswith("cpu"):
        start_worker_server()  # its imports overlap ours (torch) and the experiment's checks
    from clbench.scenarios import registry
    from clbench.sweep.experiment import Experiment, load_toml, parse_names

    trackers = _split(trackers)  # checked by run_experiment before anything is written
    style = _plot_style(plot_format, dpi)
    if preset_name and config_path:
        raise click.UsageError("give --preset or --config, not both (options override either)")
    if preset_name:
        from clbench import presets

        preset = presets.load(preset_name)
        base = Experiment.from_mapping(preset.experiment, f"preset {preset_name}")
    else:
        base = Experiment.from_mapping(load_toml(config_path), str(config_path)) if config_path else Experiment()
    known = registry.known_names()
    names = parse_names(",".join(_split(scenarios_)), known, "scenario", qualified=True) if scenarios_ else None
    exp = experiment_from_options(base, opts, names)
    if preset_name:  # before the experiment's own checks: say what the preset needs, not only what is missing
        why = presets.missing_data(preset, exp.scenarios, exp.data_root)
        if why:
            raise InputError(why)
    if opts.get("name") is None and not config_path and not preset_name and names:
        exp = dataclasses.replace(exp, name="-".join(names) + (f"-{exp.ordering}" if exp.ordering != "sequential"
                                                               else ""))
    root = Path(out) if out else Path("results") / exp.name
    with contextlib.ExitStack() as stack:
        runner = make_executor(executor, exp, jobs, address, cpus_per_run, gpus_per_run, stack)
        jobs = jobs or default_jobs(exp.threads, exp.device)
        counts = run_experiment_and_report(exp, root, force=force, jobs=jobs, quiet=opts["quiet"], plots=plots,
                                           executor=runner, log=trackers, style=style)
    if counts["failed"]:
        first = counts["failures"][0]
        raise RunsFailed(f"{counts['failed']} run(s) failed, the rest finished and are in the leaderboard "
                         f"(first: {first.config.strategy} seed {first.config.seed}: {first.error}; "
                         f"details in each run folder's error.json); run the same command again to retry them")


def run_experiment_and_report(exp, root: Path, *, force: bool, jobs: int, quiet: bool, plots: bool, executor=None,
                              log: list[str] | None = None, style: dict | None = None) -> dict:
    """Run what is missing of ``exp``, write its leaderboard (and plots), print the table."""
    from clbench.results.leaderboard import write_leaderboard
    from clbench.results.tables import people_table, to_text
    from clbench.sweep.experiment import run_experiment

    def report():  # under the folder's lock, as the runs: the leaderboard and plots have one writer too
        lb = write_leaderboard([root], root, metrics=exp.metrics)
        if plots and not lb.empty and (lb["n_seeds"] > 0).any():
            from clbench.results.plots import plot_all
            from clbench.sweep.processes import usable_cores

            plot_all([root], root / "plots", jobs=usable_cores(), **(style or {}))
        return lb

    counts = run_experiment(exp, root, force=force, jobs=jobs, show_progress=not quiet, executor=executor,
                            log=log or [], then=report)
    lb = counts["then"]
    if not lb.empty:
        click.echo(to_text(people_table(lb, exp.metrics or None)))
    click.echo(f"\n{counts['done']} run(s) done, {counts['skipped']} already complete; results in {root}/ "
               f"(leaderboard.csv, leaderboard.md{', plots/' if plots else ''})")
    if counts["nodes"]:
        click.echo("runs per Ray node: " + ", ".join(f"{node}: {n}" for node, n in sorted(counts["nodes"].items())))
    return counts


@cli.command()
@_settings_options(exclude=("eval_on",))
@click.option("--space", "spaces", multiple=True,
              help="a searched value: [strategy.]name=KIND:ARGS, KIND uniform:LOW:HIGH, loguniform:LOW:HIGH, "
              "randint:LOW:HIGH, choice:A,B or grid:A,B (e.g. ewc.ewc_lambda=loguniform:1:1e5, lr=choice:0.01,0.05) "
              "[lr, ewc_lambda, memory_strength]")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="points drawn per strategy (random/optuna search)")
@click.option("--search", type=click.Choice(["random", "grid", "optuna"]), default="random", show_default=True,
              help="Ray Tune's random/grid generator, or its Optuna searcher (needs optuna)")
@click.option("--tune-on", default="split-digits", show_default=True,
              help="scenario of the tuning phase (its validation split)")
@click.option("--evaluate-on", help="scenario of the evaluation phase (its test data) [--tune-on]")
@click.option("--protocol", type=click.Choice(["gtep", "val"]),
              help="gtep: tune on one scenario, evaluate on another (Cha et al.); val: one scenario's validation "
              "split, then its test data [gtep when --evaluate-on differs, else val]")
@click.option("--select", default="acc", show_default=True,
              help="validation metric to choose by: acc, min-acc, wc-acc, or mix:acc=0.5,wc-acc=0.5")
@click.option("--eval-seeds", help="seeds of the evaluation phase [fresh ones after --seeds]")
@click.option("--out", type=click.Path(), help="tuning folder [results/tune-<tune-on>[-to-<evaluate-on>]]")
@_executor_options
@click.option("--force", is_flag=True, help="start the tuning again, discarding this folder's trials")
@click.option("--plots/--no-plots", default=True, help="draw the evaluation phase's plots")
def tune(spaces, samples, search, tune_on, evaluate_on, protocol, select, eval_seeds, out, address, cpus_per_run,
         gpus_per_run, force, plots, **opts):
    """Choose hyperparameters without looking at test accuracy (Ray Tune), then evaluate the choice.

    The tuning phase selects each strategy's values on --tune-on's validation split; the evaluation
    phase runs them on --evaluate-on's test data with fresh seeds. Writes tuning.csv (every trial),
    chosen.toml (reload with clbench run --config) and evaluation/ with both phases' ranks. Running
    the same command again continues an interrupted tuning.
    """
    from clbench.scenarios import registry
    from clbench.sweep.experiment import Experiment, parse_names, parse_seeds
    from clbench.sweep.tuning import Tuning, parse_selection, parse_space, rank_table, tune_and_evaluate

    for name in (tune_on, evaluate_on):
        if name:
            parse_names(name, registry.known_names(), "scenario", qualified=True)
    base = Experiment(strategies=["finetune", "er", "ewc", "gem"])
    exp = experiment_from_options(base, opts)
    t = Tuning(exp, tune_on=tune_on, evaluate_on=evaluate_on, protocol=protocol,
               space=[parse_space(s) for s in spaces], samples=samples, search=search,
               select=parse_selection(select), eval_seeds=parse_seeds(eval_seeds) if eval_seeds else None)
    root = Path(out) if out else Path("results") / (f"tune-{tune_on}" + (f"-to-{evaluate_on}" if evaluate_on and
                                                                           evaluate_on != tune_on else ""))
    result = tune_and_evaluate(t, root, force=force, address=address, cpus_per_run=cpus_per_run,
                               gpus_per_run=gpus_per_run, show_progress=not opts["quiet"], plots=plots)
    t = result["tuning"]
    for strategy, values in result["chosen"].items():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        click.echo(f"chosen for {strategy}: {shown or '(nothing searched: its defaults)'}")
    click.echo("\n" + rank_table(result["leaderboard"], t))
    click.echo(f"\n{len(result['table'])} tuning run(s) ({t.protocol}: chosen on {t.tune_on}'s validation split, "
               f"evaluated on {t.evaluate_on}'s test data, seeds {t.eval_seeds}); results in {root}/ (tuning.csv, "
               "chosen.toml, evaluation/leaderboard.csv)")
    counts = result["counts"]
    if counts["failed"]:
        raise RunsFailed(f"{counts['failed']} evaluation run(s) failed; details in each run folder's error.json; "
                         "run the same command again to retry them")


def _class_order(text: str):
    if text in ("fixed", "seed"):
        return text
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise InputError(f"--class-order must be fixed, seed or a comma-separated list of class numbers, "
                         f"not {text!r}") from None


class RunsFailed(click.ClickException):
    """Some runs of an experiment raised: exit 1 (bad input is 2) with one line saying so."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"clbench: {self.message}", err=True)


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), help="where to write the merged leaderboard [the first DIR]")
@click.option("--allow-different", is_flag=True,
              help="merge experiments whose runs of one strategy differ in settings, as separate rows")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex", "csv"]), default="text",
              show_default=True, help="how the table is printed; latex also writes leaderboard.tex (booktabs)")
@click.option("--reference", help="row to test every other row against (paired t-test on ACC) [the best row]")
@click.option("--metrics", "--columns", "columns",
              help="metric columns, comma-separated, for every format (clbench list metrics: acc, min-acc, wc-acc, "
              "bwt, ...; cost: train-flops, memory-samples, memory-bytes, wall-seconds) [latex: acc,min-acc,forgetting,"
              "gap-depth,train-flops, which fit a one-column page; others: all]")
@click.option("--caption", help="the latex table's caption [what the table holds, over how many seeds]")
def report(dirs, out, allow_different, fmt, reference, columns, caption):
    """Rebuild the leaderboard from the run folders of one or more experiments (merging them),
    recomputing every metric from the runs' curves.csv. ``--metrics`` chooses the columns;
    ``--format latex`` writes a table for a paper: constant columns left out, the best value of each
    column bold, decimal points aligned, a caption and a label (tab:<folder>)."""
    from clbench.common import io
    from clbench.results.leaderboard import write_leaderboard
    from clbench.results.tables import default_caption, paper_columns, paper_table, people_table, render

    if fmt != "latex" and caption:
        raise InputError("--caption is for --format latex")
    roots = [Path(d) for d in dirs]
    for r in roots:
        if not r.is_dir():
            raise InputError(f"{r} is not a folder")
    chosen = paper_columns(columns) or _experiment_metrics(roots[0])
    target = Path(out) if out else roots[0]
    lb = write_leaderboard(roots, target, recompute=True, allow_different=allow_different, reference=reference,
                           metrics=chosen)
    if lb.empty:
        raise InputError(f"no complete run found under {', '.join(map(str, roots))}")
    table = render(paper_table(lb, chosen), fmt, caption or default_caption(lb),
                   f"tab:{target.resolve().name}") if fmt == "latex" else render(people_table(lb, chosen), fmt)
    click.echo(table)
    if fmt == "latex":
        io.atomic_write_text(target / "leaderboard.tex", table)
    written = "leaderboard.csv, leaderboard.md" + (", leaderboard.tex" if fmt == "latex" else "")
    click.echo(f"\nwritten to {target}/: {written}", err=fmt != "text")


def _experiment_metrics(root: Path) -> list[str] | None:
    """The ``metrics`` an experiment folder's experiment.toml chooses (None: none chosen, or no file)."""
    from clbench.sweep.experiment import Experiment, load_toml

    path = root / "experiment.toml"
    if not path.is_file():
        return None
    return Experiment.from_mapping(load_toml(path), str(path)).metrics or None


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), help="folder for the plots [DIR/plots]")
@_plot_options
def plot(dirs, out, plot_format, dpi):
    """Redraw the plots of one or more experiments."""
    from clbench.results.folders import run_folders
    from clbench.results.plots import plot_all
    from clbench.sweep.processes import usable_cores

    roots = [Path(d) for d in dirs]
    if not run_folders(roots):
        raise InputError(f"no complete run found under {', '.join(map(str, roots))}")
    files = plot_all(roots, Path(out) if out else roots[0] / "plots", jobs=usable_cores(),
                     **_plot_style(plot_format, dpi))
    click.echo("\n".join(str(f) for f in files))


@cli.command(name="list")
@click.argument("what", type=click.Choice(["scenarios", "strategies", "metrics", "orderings", "presets"]))
def list_(what):
    """List scenarios (with data availability), strategies (with parameters), metrics, orderings or
    presets (the papers' settings, with the data they need and the numbers they should reproduce)."""
    if what == "presets":
        _list_presets()
    elif what == "scenarios":
        from clbench.scenarios.registry import list_scenarios

        rows = list_scenarios()
        w = max(len(r["name"]) for r in rows)
        click.echo(f"{'name':<{w}}  {'dataset':<13}  tasks  {'setting':<9}  data here")
        for r in rows:
            click.echo(f"{r['name']:<{w}}  {r['dataset']:<13}  {r['tasks']:>5}  {r['setting']:<9}  "
                       f"{'yes' if r['available'] else 'no'}")
    elif what == "strategies":
        from clbench.interop.avalanche import STRATEGIES as AVALANCHE
        from clbench.run import catalog

        for name in catalog.known_names():
            entry = catalog.lookup(name)
            params = ", ".join(f"{k}={v}" for k, v in entry.params().items() if k not in entry.fixed)
            click.echo(f"{name:<14} {entry.summary}\n{'':<14} {params or '(no parameters)'}")
        click.echo(f"{'':<14} (memory strategies take the experiment's --memory budget, a per-scenario default, "
                   "unless their own memory parameter is set)")
        click.echo(f"{'avalanche:NAME':<14} an Avalanche 0.6 strategy in its own loop, evaluated by clbench: "
                   f"{', '.join(AVALANCHE)}\n{'':<14} (its own keyword parameters, e.g. --param ewc_lambda=100)")
    elif what == "metrics":
        from clbench.evaluation.metrics import METRIC_DESCRIPTIONS, UNEVALUATED

        for k, v in METRIC_DESCRIPTIONS.items():
            click.echo(f"{k:<22} {v}\n{'':<22} an unevaluated iteration: {UNEVALUATED[k]}")
    else:
        from clbench.scenarios.orderings import ORDERINGS, ordering_params

        for name in ORDERINGS:
            p = ", ".join(f"{k}={v}" for k, v in ordering_params(name).items())
            click.echo(f"{name:<12} {p or '(no parameters)'}")


def _list_presets() -> None:
    from clbench import presets

    for name in presets.names():
        p = presets.load(name)
        why = presets.missing_data(p)
        exp = p.experiment
        click.echo(f"{name}\n  paper:     {p.paper}" + (f" (code: {p.code})" if p.code else ""))
        click.echo(f"  runs:      {', '.join(exp['scenarios'])} x {', '.join(exp['strategies'])}, "
                   f"seeds {', '.join(map(str, exp.get('seeds', [0, 1, 2])))}")
        click.echo(f"  data:      {p.data} [{'here' if why is None else 'missing'}]")
        for row in p.published:
            click.echo(f"  published: {row.strategy} {row.metric} {100 * row.value:.2f} on {row.scenario} "
                       f"({row.source}{'; ' + row.note if row.note else ''})")
        if not p.published:
            click.echo("  published: none for these settings")


def entry(argv: list[str] | None = None) -> int:
    """The command line as a function returning its exit code: bad input (a click usage error or
    an ``InputError``) is one line on stderr and 2, failed runs 1, an interruption 130; never a
    traceback for any of them."""
    if not (sys.argv[1:] if argv is None else argv):  # plain ``clbench``: the help, not an error
        argv = ["--help"]
    with _noting_interrupts() as interrupted:
        try:
            return _entry(argv)
        except Exception:
            # a Ctrl-C inside an import (torch's, in the first seconds) can surface as another
            # error of the half-imported module: the interruption is what happened
            if interrupted:
                global _HALF_IMPORTED
                _HALF_IMPORTED = True
                return _interrupted(None, argv)
            raise


#: a Ctrl-C stopped an import half way (``entry``): the process must leave without teardown
_HALF_IMPORTED = False


@contextlib.contextmanager
def _noting_interrupts():
    """Ctrl-C raises KeyboardInterrupt as always, and is also noted (the yielded list)."""
    noted: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum, frame):
        noted.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _entry(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="clbench", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        click.echo(f"clbench: error: {e.format_message()}", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort as e:  # click turns Ctrl-C into Abort; the interruption is its cause
        return _interrupted(e.__cause__ or e.__context__, argv)
    except InputError as e:
        click.echo(f"clbench: error: {e}", err=True)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e, argv)
    except OSError as e:  # the machine refused mid-way (a full disk, a read-only folder): its one line
        where = f" {e.filename}" if e.filename else ""
        click.echo(f"clbench: error: cannot write or read{where}: {e.strerror or e}; what was complete before "
                   "is kept (run folders appear only when whole): free the space or fix the permission and run "
                   "the same command again", err=True)
        return 1


def _interrupted(e: BaseException | None, argv: list[str] | None) -> int:
    """Ctrl-C: one line saying what was kept and the command that resumes. Imports nothing: the
    interruption may have left a module (torch) half imported."""
    Interrupted = getattr(sys.modules.get("clbench.sweep.experiment"), "Interrupted", ())  # noqa: N806
    again = shlex.join(["clbench", *(sys.argv[1:] if argv is None else argv)])
    if isinstance(e, Interrupted):
        click.echo(f"clbench: interrupted; {e.complete} of {e.total} runs are complete and kept in {e.root}/ "
                   f"— resume with: {again}", err=True)
    else:
        click.echo(f"clbench: interrupted; nothing incomplete was kept — run again with: {again}", err=True)
    return 130


def main() -> None:
    code = entry()
    if _HALF_IMPORTED:  # leave without tearing down what is half imported (torch crashes at exit
        # when a Ctrl-C stopped its import); the one line is written already
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
