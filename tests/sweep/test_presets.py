"""Paper presets: each one holds the settings its paper (and the authors' code) uses, as
``shared/REFERENCES.md`` records them; the expected values below are transcribed from there, not
read from the preset files, so a preset that drifts from its paper fails here."""

from __future__ import annotations

import json

import pytest

from clbench import presets
from clbench.common.errors import InputError
from clbench.run.resolve import resolve
from clbench.scenarios.registry import scenario_spec
from clbench.scenarios.sources import dataset_info
from clbench.sweep.experiment import Experiment
from tests.helpers import clbench

#: per preset: the run settings every run must have, and per strategy the parameters it must run with
PAPERS = {
    "delange-split-mnist": (
        {"scenario": "split-mnist", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 256, "epochs": 10,
         "model": "mlp", "model_options": {"hidden": [400, 400]}, "eval_every": 1, "eval_subset": 1000,
         "scenario_options": {"class_order": "fixed"}, "val_fraction": 0.0},
        {"er": {"mem_size": 2000, "buffer": "class-balanced", "weighting": "weighted", "w_new": 0.3},
         "gem": {"patterns_per_task": 400, "memory_strength": 0.5}}),
    "delange-split-fmnist": (
        {"scenario": "split-fmnist", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 256, "epochs": 10,
         "model": "mlp", "model_options": {"hidden": [400, 400]}, "eval_every": 1, "eval_subset": 1000,
         "scenario_options": {"class_order": "fixed"}, "val_fraction": 0.0},
        {"er": {"mem_size": 2000, "buffer": "class-balanced", "weighting": "weighted", "w_new": 0.3},
         "vb-er": {"mem_size": 2000, "buffer": "class-balanced", "weighting": "weighted", "w_new": 0.3},
         "gem": {"patterns_per_task": 400, "memory_strength": 0.5},
         # their EWC: online, Fisher = mean squared minibatch gradients, no 1/2, lambda 1
         "ewc": {"mode": "online", "fisher": "batched", "half": False, "ewc_lambda": 1.0}}),
    **{f"vandeven-split-mnist-{s}": (
        {"scenario": "split-mnist", "optimizer": "adam", "lr": 0.001, "batch_size": 128, "iterations": 2000,
         "model": "mlp", "model_options": {"hidden": [400, 400]}, "val_fraction": 0.0,
         "scenario_options": {"setting": f"{s}-il", "class_order": "fixed"}},
        # their EWC: separate penalties, the exact Fisher over all training samples, lambda/2 (their code's
        # split-MNIST lambdas: params/param_values.py)
        {"ewc": {"mode": "separate", "fisher": "exact", "fisher_n": None, "half": True, "ewc_lambda": lam},
         **({"er": {"mem_size": 1000, "replay_batch": 128, "weighting": "1/k"}} if s == "class" else {})})
        for s, lam in (("task", 1e5), ("domain", 1e10), ("class", 1e9))},
    "lopezpaz-gem-permuted-mnist": (
        {"scenario": "permuted-mnist", "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "batch_size": 10, "epochs": 1,
         "model": "mlp", "model_options": {"hidden": [100, 100]}, "val_fraction": 0.0,
         "scenario_options": {"n_tasks": 20, "train_per_task": 1000, "setting": "domain-il"}},
        {"gem": {"patterns_per_task": 256, "memory_strength": 0.5}}),
    "janson-nmc-split-cifar100": (
        {"scenario": "split-cifar100", "scenario_options": {"n_tasks": 10, "class_order": "fixed"},
         "val_fraction": 0.0},
        {"nmc": {"backbone": "timm:vit_base_patch16_224_in21k", "inputs": "raw"}}),
    "kang-viewbatch-split-cifar10": (
        {"scenario": "split-cifar10", "optimizer": "sgd", "lr": 0.1, "batch_size": 32, "epochs": 50, "memory": 200,
         "model": "resnet18-slim", "model_options": {"nf": 64}, "augment": "weak", "val_fraction": 0.0},
        {"er": {"mem_size": 200}, "vb-er": {"mem_size": 200, "views": 4, "ssl_weight": 1.0, "ssl_warmup_epochs": 5}}),
    "default-split-digits": ({"scenario": "split-digits", "seed": None}, {}),
}

#: the numbers the papers report (shared/REFERENCES.md), per preset: (scenario, strategy, metric) -> value
PUBLISHED = {
    "vandeven-split-mnist-class": {("split-mnist", "finetune", "acc"): 0.1990, ("split-mnist", "ewc", "acc"): 0.1990,
                                   ("split-mnist", "joint-offline", "acc"): 0.9793,
                                   ("split-mnist", "er", "acc"): 0.9078, ("split-mnist", "gem", "acc"): 0.9220},
    "vandeven-split-mnist-task": {("split-mnist", "finetune", "acc"): 0.8515,
                                  ("split-mnist", "joint-offline", "acc"): 0.9964},
    "lopezpaz-gem-permuted-mnist": {("permuted-mnist", "gem", "acc"): 0.83},
    "janson-nmc-split-cifar100": {("split-cifar100", "nmc[timm:vit_base_patch16_224_in21k]", "acc"): 0.8370},
    "kang-viewbatch-split-cifar10": {("split-cifar10", "er", "acc"): 0.503, ("split-cifar10", "vb-er", "acc"): 0.526},
}


def test_every_paper_has_a_preset_and_nothing_else_ships():
    assert set(presets.names()) == set(PAPERS)


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_a_preset_runs_with_its_papers_settings(name):
    """Every run of the preset, resolved as the runner resolves it (scenario defaults filled in, the
    memory budget spent), has the paper's settings and parameters."""
    preset = presets.load(name)
    exp = Experiment.from_mapping(preset.experiment, name)
    assert exp.preset == name and len(exp.seeds) >= 3
    settings, params = PAPERS[name]
    configs = exp.run_configs()
    assert {c.strategy for c in configs} >= set(params)
    for config in configs:
        spec = scenario_spec(config.scenario)
        n_tasks = exp.scenario_options.get("n_tasks", spec.args.get("n_tasks"))
        run = resolve(config, spec.train, n_tasks)
        resolved, spent = run.config, run.strategy_params
        for key, want in settings.items():
            if key != "seed":
                assert getattr(resolved, key) == want, (name, config.strategy, key)
        for key, want in params.get(config.strategy, {}).items():
            assert spent.get(key, _default(config.strategy, key)) == want, (name, config.strategy, key)


def _default(strategy: str, key: str):
    from clbench.run import catalog

    return catalog.lookup(strategy).params()[key]


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_a_preset_sets_the_papers_published_numbers_beside_ours(name):
    got = {(p.scenario, p.strategy, p.metric): p.value for p in presets.load(name).published}
    assert got == PUBLISHED.get(name, {})
    assert all(p.source for p in presets.load(name).published)


def test_list_presets_names_paper_data_and_numbers():
    r = clbench("list", "presets")
    assert r.returncode == 0
    out = r.stdout
    for name in PAPERS:
        assert f"\n{name}\n" in f"\n{out}"
    assert "Lopez-Paz, Ranzato" in out and "published: gem acc 83.00 on permuted-mnist" in out
    assert "published: none for these settings" in out  # the digits default has no paper


def test_a_preset_whose_data_is_missing_says_which_files_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if dataset_info("mnist").available():
        pytest.skip("MNIST is on this machine")
    proc = clbench("run", "--preset", "delange-split-mnist", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "preset delange-split-mnist needs MNIST" in line
    assert "train-images-idx3-ubyte" in line and not (tmp_path / "o").exists()


def test_unknown_preset_and_preset_with_config_are_one_line_errors(tmp_path):
    for args, want in ((["--preset", "nope"], "unknown preset 'nope'; known presets: default-split-digits"),
                       (["--preset", "default-split-digits", "--config", str(tmp_path / "x.toml")],
                        "give --preset or --config, not both")):
        proc = clbench("run", *args)
        assert proc.returncode == 2 and want in proc.stderr and "Traceback" not in proc.stderr


def _tiny_run(tmp_path, preset: str, *flags: str) -> str:
    out = tmp_path / preset
    r = clbench("run", "--preset", preset, "--seeds", "0,1", "--iterations", "3", "--eval-subset", "20", "--no-plots",
                "--quiet", "--out", out, *flags)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_the_split_fmnist_preset_runs_for_a_few_iterations(tmp_path):
    if not dataset_info("fashion-mnist").available():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = _tiny_run(tmp_path, "delange-split-fmnist", "--param", "ewc.fisher_n=64")
    cfg = json.loads((out / "runs/split-fmnist/er/seed0/config.json").read_text())
    assert cfg["run"]["batch_size"] == 256 and cfg["run"]["lr"] == 0.01 and cfg["strategy"]["w_new"] == 0.3
    assert cfg["run"]["iterations"] == 3 and cfg["run"]["epochs"] is None  # --iterations replaces the epochs
    assert cfg["strategy"]["mem_size"] == 2000 and cfg["scenario"]["class_order"] == list(range(10))
    assert 'preset = "delange-split-fmnist"' in (out / "experiment.toml").read_text()
    table = (out / "leaderboard.md").read_text()
    for strategy in ("finetune", "joint", "er", "ewc", "gem", "nmc[pixels]", "vb-er"):
        assert f"| {strategy} |" in table


def test_the_default_preset_is_the_default_benchmark_with_five_seeds(tmp_path):
    exp = Experiment.from_mapping(presets.load("default-split-digits").experiment)
    default = Experiment()
    assert exp.seeds == [0, 1, 2, 3, 4] and exp.strategies == default.strategies and exp.scenarios == default.scenarios
    assert exp.identity() | {"strategies": None} == default.identity() | {"strategies": None}
    out = _tiny_run(tmp_path, "default-split-digits", "--strategy", "finetune,nmc")
    assert len(list((out / "runs/split-digits").glob("*/seed*/summary.json"))) == 4


def test_leaderboard_sets_the_published_number_and_our_distance_from_it(tmp_path, monkeypatch):
    """A row with a published number gets it beside ours and (ours - published) / (std of our seeds);
    a row without one gets empty cells; the sources are listed under the table."""
    import pandas as pd

    from clbench.results.leaderboard import write_leaderboard
    from clbench.sweep.experiment import run_experiment

    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "tiny.toml").write_text('''name = "tiny"
scenarios = ["split-digits"]
strategies = ["finetune", "nmc"]
seeds = [0, 1, 2]
iterations = 2
eval_every = 2

[preset]
paper = "A. Author. A paper. 2020"
code = ""
data = "none to fetch"
settings = "two iterations per task"

[[preset.published]]
scenario = "split-digits"
strategy = "finetune"
metric = "acc"
value = 0.25
source = "A. Author 2020, Table 1"
''')
    monkeypatch.setattr(presets, "FOLDER", folder)
    exp = Experiment.from_mapping(presets.load("tiny").experiment)
    run_experiment(exp, tmp_path / "o", show_progress=False)
    lb = write_leaderboard([tmp_path / "o"], tmp_path / "o")
    ft = lb.set_index("strategy").loc["finetune"]
    md = (tmp_path / "o" / "leaderboard.md").read_text()
    cells = [[c.strip() for c in line.split("|")] for line in md.splitlines() if line.startswith("| ")]
    cols = cells[0]
    assert "ACC published" in cols and "ACC: ours - published (our std)" in cols
    rows = {r[cols.index("strategy")]: r for r in cells[1:]}
    want = (ft["acc_mean"] - 0.25) / ft["acc_std"]
    assert rows["finetune"][cols.index("ACC published")] == "25.0"
    assert rows["finetune"][cols.index("ACC: ours - published (our std)")] == f"{want:+.1f}"
    assert rows["nmc[pixels]"][cols.index("ACC published")] == ""
    assert "- finetune on split-digits, ACC 25.0: A. Author 2020, Table 1" in md
    assert not pd.isna(ft["acc_std"]) and ft["acc_std"] > 0


def test_dropping_a_presets_strategies_drops_their_parameters():
    """Every option overrides a preset, --strategy included: the strategies left out take their preset
    parameters with them; a --param for one of them is still a mistake, said in one line."""
    from clbench.cli import experiment_from_options

    base = Experiment.from_mapping(presets.load("delange-split-fmnist").experiment, "preset")
    assert "vb-er" in base.params
    exp = experiment_from_options(base, {"strategies_": ("finetune,joint,er,gem,nmc",), "params": ()})
    assert exp.strategies == ["finetune", "joint", "er", "gem", "nmc"] and "vb-er" not in exp.params
    assert exp.params["er"] == base.params["er"]
    with pytest.raises(InputError, match="strategy vb-er is not part of this experiment"):
        experiment_from_options(base, {"strategies_": ("er",), "params": ("vb-er.views=2",)}).validate()
