"""Sweeps on a real local Ray instance and honest tuning with Ray Tune: the same numbers as the
local executor, failures isolated and retried once, a choice made on validation data only."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clbench.cli import entry
from clbench.common.lock import LOCK_FILE
from clbench.scenarios.sources import DATASETS
from clbench.sweep.experiment import load_toml
from clbench.sweep.tuning import parse_space
from tests.helpers import invoke, tiny

# one worker holds the session's Ray instance when the suite runs in parallel (pytest -n)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


TINY = tiny(None, None, 6, 3, 10)


def test_ray_gives_the_local_executors_curves(capsys, tmp_path, ray_instance):
    sweep = ["run", "--strategy", "finetune,er,ewc", "--seeds", "0,1", *TINY]
    assert invoke(capsys, *sweep, "--executor", "ray", "--out", str(tmp_path / "ray"))[0] == 0
    assert invoke(capsys, *sweep, "--jobs", "2", "--out", str(tmp_path / "pool"))[0] == 0
    ray_curves = sorted((tmp_path / "ray").glob("runs/*/*/*/curves.csv"))
    assert len(ray_curves) == 6
    for path in ray_curves:
        twin = tmp_path / "pool" / path.relative_to(tmp_path / "ray")
        assert path.read_bytes() == twin.read_bytes(), path


def test_a_run_that_raises_in_a_ray_worker_fails_alone(capsys, tmp_path, ray_instance):
    out = tmp_path / "out"
    code, stdout, err = invoke(capsys, "run", "--executor", "ray", "--strategy", "finetune,tests.faulty:RaisesOnSeed1",
                               "--seeds", "0,1", *TINY, "--out", str(out))
    assert code == 1 and "1 run(s) failed" in err and "Traceback" not in err
    error = json.loads((out / "runs/split-digits/tests.faulty%3ARaisesOnSeed1/seed1/error.json").read_text())
    # the driver wrote the record the worker sent, saying on which node it failed
    assert error["error"] == f"on node {error['node']}: RuntimeError: out of cheese" and error["attempts"] == 2
    lb = pd.read_csv(out / "leaderboard.csv").set_index("strategy")
    assert lb.loc["finetune", "n_seeds"] == 2 and lb.loc["tests.faulty:RaisesOnSeed1", "n_seeds"] == 1
    assert lb.loc["tests.faulty:RaisesOnSeed1", "n_failed"] == 1


@pytest.mark.parametrize("executor", [["--executor", "ray"], ["--jobs", "2"]], ids=["ray", "pool"])
def test_a_worker_that_dies_is_retried_once_then_recorded_failed(capsys, tmp_path, ray_instance, executor):
    out, tally = tmp_path / "out", tmp_path / "attempts"
    code, _, err = invoke(capsys, "run", *executor, "--strategy", "tests.faulty:DiesOnSeed1", "--seeds", "0,1,2",
                          "--param", f"tally={tally}", *TINY, "--out", str(out))
    assert code == 1 and "1 run(s) failed" in err, err
    assert len(tally.read_text().split()) == 2  # the first attempt and one retry
    runs = out / "runs/split-digits/tests.faulty%3ADiesOnSeed1"
    assert "died on each of 2 attempts" in json.loads((runs / "seed1/error.json").read_text())["error"]
    assert (runs / "seed0/curves.csv").is_file() and (runs / "seed2/curves.csv").is_file()


def _tune(out, *extra) -> int:
    return entry([*_args(out), *extra])


@pytest.fixture(scope="session")
def tuned(tmp_path_factory, ray_instance):
    """One tiny tuning (val protocol on split-digits, a 2 x 2 grid), shared by the tests below (per
    session, not module: under pytest -n another file's test may run between two of them)."""
    out = tmp_path_factory.mktemp("tuned") / "tune"
    assert _tune(out) == 0
    return out


def test_tune_chooses_the_best_validation_value_and_evaluates_it(tuned):
    out = tuned
    table = pd.read_csv(out / "tuning.csv")
    assert len(table[table.strategy == "er"]) == 2 and len(table[table.strategy == "ewc"]) == 4  # the grid
    assert table["val_acc"].between(0, 1).all() and not table["error"].notna().any()
    chosen = load_toml(out / "chosen.toml")
    for strategy in ("er", "ewc"):
        rows = table[table.strategy == strategy]
        best = rows.loc[rows["trial_mean"].idxmax()]
        assert chosen["strategy_settings"][strategy]["lr"] == best["param.lr"]
    best_ewc = table[table.strategy == "ewc"].sort_values("trial_mean").iloc[-1]
    assert chosen["params"]["ewc"]["ewc_lambda"] == best_ewc["param.ewc_lambda"]
    assert chosen["eval_on"] == "test" and chosen["seeds"] == [1]  # fresh seeds, test data
    lb = pd.read_csv(out / "evaluation" / "leaderboard.csv").set_index("strategy")
    assert sorted(lb["tune_rank"]) == [1, 2] and sorted(lb["eval_rank"]) == [1, 2]
    assert lb.loc["er", "tune_score"] == pytest.approx(table[table.strategy == "er"]["trial_mean"].max())
    assert lb.loc["er", "eval_score"] == pytest.approx(lb.loc["er", "acc_mean"])
    # the evaluation runs used exactly the chosen values
    config = json.loads((out / "evaluation/runs/split-digits/ewc/seed1/config.json").read_text())["run"]
    assert config["lr"] == best_ewc["param.lr"] and config["params"]["ewc_lambda"] == best_ewc["param.ewc_lambda"]
    assert config["eval_on"] == "test"
    trial = json.loads(next((out / "tuning/runs/split-digits/ewc").glob("trial-*/seed0/config.json")).read_text())
    assert trial["run"]["eval_on"] == "val"  # the tuning phase never saw test data
    md = (out / "evaluation/leaderboard.md").read_text()
    assert "## Tuning (val)" in md
    assert f"| lr={best_ewc['param.lr']:g}" in md or f"lr={best_ewc['param.lr']:g} |" in md  # each row's own lr


def test_tune_resumes_from_its_run_folders_and_a_finished_one_is_instant(capsys, tmp_path, tuned):
    out = tmp_path / "tune"
    shutil.copytree(tuned, out)
    table = (out / "tuning.csv").read_text()
    def results():  # every file but the folder's lock (which names its latest holder)
        return {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file() and f.name != LOCK_FILE}

    before = results()
    code, stdout, _ = invoke(capsys, *_args(out))
    assert code == 0  # a finished tuning is read back: no file written, no run trained
    assert results() == before
    assert "tune rank" in stdout and "chosen for ewc: lr=" in stdout
    # as if interrupted: one tuning run and one evaluation run are missing
    trial = next((out / "tuning/runs/split-digits/ewc").glob("trial-*/seed0"))
    shutil.rmtree(trial)
    shutil.rmtree(out / "evaluation/runs/split-digits/er/seed1")
    (out / "evaluation/leaderboard.csv").unlink()
    assert _tune(out) == 0
    assert (out / "tuning.csv").read_text() == table
    assert (trial / "curves.csv").is_file() and (out / "evaluation/runs/split-digits/er/seed1/curves.csv").is_file()
    # another request in the same folder is refused, not mixed in
    code, _, err = invoke(capsys, *_args(out), "--samples", "3", "--select", "wc-acc")
    assert code == 2 and "holds a different tuning" in err


def _args(out) -> list[str]:
    return ["tune", "--strategy", "er,ewc", "--space", "lr=choice:0.01,0.1", "--space", "ewc.ewc_lambda=choice:1,1000",
            "--search", "grid", "--seeds", "0", *TINY, "--out", str(out)]


def test_tune_with_ray_tunes_optuna_searcher(capsys, tmp_path, ray_instance):
    out = tmp_path / "optuna"
    code, _, err = invoke(capsys, "tune", "--strategy", "ewc", "--space", "ewc.ewc_lambda=loguniform:1:1000",
                          "--search", "optuna", "--samples", "3", "--seeds", "0", *TINY, "--out", str(out))
    assert code == 0, err
    table = pd.read_csv(out / "tuning.csv")
    assert len(table) == 3 and table["param.ewc_lambda"].between(1, 1000).all()
    chosen = load_toml(out / "chosen.toml")["params"]["ewc"]["ewc_lambda"]
    assert chosen == table.loc[table["trial_mean"].idxmax(), "param.ewc_lambda"]


@pytest.mark.parametrize("args,message", [
    (["--space", "lr=uniform:0.1"], "uniform:LOW:HIGH with finite LOW < HIGH"),
    (["--space", "lr=normal:0:1"], "must look like [strategy.]name=KIND:ARGS"),
    (["--space", "lr=loguniform:0:1"], "loguniform needs 0 < LOW"),
    (["--space", "ewc.nope=choice:1,2"], "no tuned strategy has a parameter 'nope'"),
    (["--space", "gem.memory_strength=uniform:0:1"], "strategy gem is not being tuned"),
    (["--space", "ewc.ewc_lambda=uniform:-5:5"], "ewc_lambda=-5.0: input should be greater than or equal to 0"),
    (["--space", "lr=uniform:0:0.1"], "lr=0.0: input should be greater than 0"),
    (["--space", "lr=uniform:0.01:0.1", "--search", "grid"], "--search grid needs every --space dimension"),
    (["--select", "accuracy"], "cannot select on 'accuracy'"),
    (["--select", "mix:acc=x"], "write mix:METRIC=WEIGHT"),
    (["--eval-seeds", "0"], "must be fresh"),
    (["--val-fraction", "0"], "--val-fraction must be > 0"),
    (["--protocol", "gtep"], "give --evaluate-on"),
    (["--evaluate-on", "split-nothing"], "unknown scenario 'split-nothing'"),
    (["--jobs", "2"], "No such option '--jobs'"),
    (["--samples", "0"], "--samples"),
])
def test_bad_tuning_requests_are_one_line_and_write_nothing(capsys, tmp_path, args, message):
    out = tmp_path / "tune"
    code, _, err = invoke(capsys, "tune", "--strategy", "er,ewc", "--seeds", "0", *TINY, "--out", str(out), *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.skipif(not DATASETS["fashion-mnist"].available(), reason="apt-get install dataset-fashion-mnist")
def test_gtep_needs_the_same_scenario_configuration(capsys, tmp_path):
    code, _, err = invoke(capsys, "tune", "--strategy", "er", "--tune-on", "split-digits", "--evaluate-on",
                          "permuted-fmnist", "--seeds", "0", *TINY, "--out", str(tmp_path / "t"))
    assert code == 2 and "GTEP needs the same scenario configuration" in err, err


def test_a_search_space_reads_back_as_written():
    for text in ("ewc.ewc_lambda=loguniform:1.0:100000.0", "lr=choice:0.01,0.05", "mem_size=randint:10:50",
                 "er.w_new=grid:0.25,0.5"):
        assert parse_space(text).text() == text


def test_gtep_evaluates_with_the_training_configuration_it_tuned_with():
    """Cha et al. keep the configuration of both phases the same: what the experiment leaves to the
    scenario comes from the tuning scenario (split-digits: batch 32, 10 epochs, lr 0.05), not from
    the evaluation scenario's defaults (split-fmnist: batch 256, 1 epoch, lr 0.01); what the user
    set stays."""
    from clbench.sweep.experiment import Experiment
    from clbench.sweep.tuning import Tuning, same_training

    exp = same_training(Experiment(strategies=["er"], seeds=[0], batch_size=64), "split-digits")
    assert (exp.batch_size, exp.epochs, exp.iterations, exp.lr, exp.momentum, exp.optimizer) == \
        (64, 10, None, 0.05, 0.9, "sgd")
    t = Tuning(Experiment(strategies=["er"], seeds=[0], val_fraction=0.1), tune_on="split-digits",
               evaluate_on="split-fmnist", protocol="gtep", eval_seeds=[1])
    t = dataclasses.replace(t, experiment=same_training(t.experiment, t.tune_on))
    run = t.phase_experiment("evaluate", {"er": {"lr": 0.1}}).run_configs()[0]
    assert (run.scenario, run.batch_size, run.epochs, run.lr) == ("split-fmnist", 32, 10, 0.1)


def test_a_trial_that_diverged_is_never_chosen():
    from clbench.sweep.experiment import Experiment
    from clbench.sweep.tuning import Tuning, choose

    t = Tuning(Experiment(strategies=["er"], seeds=[0]), space=[parse_space("lr=choice:0.01,0.5")])
    table = pd.DataFrame([{"strategy": "er", "param.lr": 0.5, "trial_mean": 0.9, "diverged": 1, "error": ""},
                          {"strategy": "er", "param.lr": 0.01, "trial_mean": 0.6, "diverged": 0, "error": ""}])
    assert choose(table, t) == {"er": {"lr": 0.01}}
    with pytest.raises(ValueError, match="DIVERGED"):
        choose(table.assign(diverged=1), t)


@pytest.mark.parametrize("request_", [["--cpus-per-run", "64"], ["--gpus-per-run", "1"]], ids=["cpus", "gpus"])
def test_a_request_no_node_can_grant_is_refused_before_anything_is_written(capsys, tmp_path, ray_instance, request_):
    """Ray would keep such a task pending forever, without a word."""
    out = tmp_path / "out"
    code, _, err = invoke(capsys, "run", "--executor", "ray", "--strategy", "finetune", "--seeds", "0", *TINY,
                          "--out", str(out), *request_)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no node of the Ray cluster has" in err, err
    assert not out.exists()
    code, _, err = invoke(capsys, "tune", "--strategy", "er", "--seeds", "0", *TINY, "--out", str(tmp_path / "t"),
                          *request_)
    assert code == 2 and "no node of the Ray cluster has" in err, err
    assert [p.name for p in (tmp_path / "t").rglob("*")] in ([], [".clbench.lock"])  # the folder's lock only


def test_an_address_where_nothing_listens_is_one_line_within_seconds(tmp_path):
    import subprocess
    import sys
    import time

    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "clbench.cli", "run", "--executor", "ray", "--address", "127.0.0.1:1",
                           "--strategy", "finetune", "--seeds", "0", *TINY, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "nothing answers at 127.0.0.1:1" in done.stderr and time.monotonic() - start < 60
    assert not (tmp_path / "out").exists()


def test_a_worker_sends_its_run_folder_back_and_keeps_nothing(tmp_path):
    """What a Ray task runs on a node that shares no file system with the driver: the run in a
    temporary folder of its own, removed afterwards, and the folder's files returned."""
    import tempfile

    from clbench.run.runner import RunConfig
    from clbench.sweep.executors import run_elsewhere, write_folder

    before = set(Path(tempfile.gettempdir()).glob("clbench-run-*"))
    outcome, files = run_elsewhere(RunConfig(strategy="finetune", iterations=3, eval_every=3, eval_subset=10))
    assert not outcome.failed and {"config.json", "curves.csv", "summary.json"} <= set(files)
    assert set(Path(tempfile.gettempdir()).glob("clbench-run-*")) == before  # nothing left on the node
    write_folder(tmp_path / "runs" / "seed0", files)
    assert (tmp_path / "runs" / "seed0" / "curves.csv").read_bytes() == files["curves.csv"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["seed0"]  # no staging left beside it
    with pytest.raises(RuntimeError, match="outside its run folder"):
        write_folder(tmp_path / "runs" / "seed1", {"../../escape.txt": b"x"})
    assert not (tmp_path / "escape.txt").exists()
