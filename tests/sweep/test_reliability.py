"""Reliability: every kind of bad input is refused before anything is written (one line, exit 2),
a failing run is recorded while the sweep goes on, divergence is visible and ranks last, results
do not depend on the executor, and nothing outlives an interrupted command."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clbench.evaluation.metrics import diverged_at
from clbench.results.leaderboard import write_leaderboard
from clbench.results.plots import _load
from clbench.results.tables import people_table, to_text
from clbench.run.runner import RunConfig
from clbench.scenarios import InputError
from clbench.scenarios.readers import write_idx
from clbench.sweep import executors
from clbench.sweep.experiment import Experiment, Interrupted, run_dir, run_experiment
from tests.helpers import invoke, make_cifar100, make_idx_dataset, tiny

TINY = tiny()


def assert_refused(capsys, out: Path, *args: str, message: str = "") -> str:
    code, _, err = invoke(capsys, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists(), f"a refused experiment wrote {sorted(p.name for p in out.rglob('*'))}"
    return err


# ---------------------------------------------------------------- refused before anything is written

@pytest.mark.parametrize("toml,message", [
    ('seeds = "abc"', "seeds='abc': input should be a valid list"),
    ('epochs = "one"', "epochs='one': input should be a valid number"),
    ('lr = "big"', "lr='big': input should be a valid number"),
    ("params = 3", "params=3: input should be a valid dictionary"),
    ("params = {er = 3}", "params.er=3: input should be a valid dictionary"),
    ("seeds = [-1]", "seeds=-1: input should be greater than or equal to 0"),
    ("seeds = [0, 0]", "repeats a seed"),
    ("seeds = []", "seeds=[]: list should have at least 1 item"),
    ('name = "../elsewhere"', "must be a folder name"),
    ("orderings = 0", "orderings=0: input should be greater than or equal to 1"),
    ("eval_subset = 0", "eval_subset=0: must be a number of samples"),
    ("batch_size = 2.5", "batch_size=2.5"),
    ("lr = nan", "lr=nan: input should be a finite number"),
    ("momentum = 1.0", "momentum=1.0: input should be less than 1"),
    ('eval_precision = "fp8"', "eval_precision='fp8'"),
    ("threads = 0", "threads=0"),
    ("model_options = {hidden = [-5]}", "bad options for model mlp: MLP: hidden=-5: input should be greater"),
    ('model_options = {hidden = "abc"}', "bad options for model mlp"),
    ("colour = 3", "unknown key(s) colour"),
    # TOML has types: a bool is not a seed nor a number, a string is not a real
    ("seeds = [true]", "seeds=True: input should be a valid integer"),
    ("epochs = true", "epochs=True: input should be a valid number"),
    ('lr = "0.1"', "lr='0.1': input should be a valid number"),
    ("seeds = [4294967296]", "input should be less than or equal to 4294967295"),
    ('strategies = ["er", "er"]', "er is named twice"),
])
def test_bad_toml_values_are_one_line(capsys, tmp_path, toml, message):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(toml + "\n")
    assert_refused(capsys, tmp_path / "out", "run", "--config", str(cfg), "--out", str(tmp_path / "out"),
                   message=message)


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "lr=-1.0: input should be greater than 0"),
    (["--lr", "nan"], "lr=nan: input should be a finite number"),
    (["--lr", "big"], "'big' is not a valid float"),
    (["--class-order", "0,1,x"], "--class-order must be fixed, seed or a comma-separated list"),
    (["--class-order", "0,1,2"], "class_order must list each of the 10 classes exactly once"),
    (["--batch-size", "0"], "batch_size=0: input should be greater than or equal to 1"),
    (["--n-tasks", "0"], "n_tasks"),
    (["--seed", "-1"], "seeds=-1: input should be greater than or equal to 0"),
    (["--epochs", "0"], "epochs=0.0: input should be greater than 0"),
    (["--iterations", "0"], "iterations=0"),
    (["--eval-every", "0"], "eval_every=0"),
    (["--memory", "-1"], "memory=-1"),
    (["--val-fraction", "1"], "val_fraction=1.0: input should be less than 1"),
    (["--eval-on", "val", "--val-fraction", "0"], "--eval-on val needs a validation split"),
    (["--threads", "0"], "threads=0"),
    (["--jobs", "0"], "--jobs"),
    (["--dense-after-switch", "-1"], "dense_after_switch=-1"),
    (["--model", "transformer"], "unknown model 'transformer'"),
    # the model settings are the experiment's: refused even where the only strategy ignores the model
    (["--strategy", "nmc", "--model", "transformer"], "unknown model 'transformer'"),
    (["--orderings", "0"], "orderings=0"),
    (["--colour", "red"], "No such option '--colour'"),
    (["--strategy", "ewc", "--param", "ewc_lambda=nan"], "strategy ewc: ewc_lambda='nan': input should be a finite"),
    (["--strategy", "gem", "--param", "gem.memory_strength=nan"], "memory_strength='nan'"),
    (["--strategy", "ewc", "--param", "fisher_n=0"], "fisher_n='0': input should be greater than or equal to 1"),
    (["--strategy", "er", "--param", "replay_batch=0"], "replay_batch='0': input should be greater than"),
    (["--strategy", "er", "--param", "w_new=1.5"], "w_new='1.5'"),
    (["--strategy", "er", "--param", "buffer=fifo"], "buffer='fifo': input should be 'reservoir' or"),
    (["--strategy", "vb-er", "--param", "views=0"], "views='0'"),
    (["--strategy", "gem", "--memory", "3"], "leaves GEM less than one sample"),
    # a bad value of the last strategy fails before the first one runs
    (["--strategy", "finetune,nmc", "--param", "nmc.backbone=nothing"], "unknown backbone 'nothing'"),
    (["--strategy", "finetune,er", "--ordering", "fuzzy", "--ordering-param", "width=-2"],
     "ordering fuzzy: width=-2: input should be greater than or equal to 0"),
    (["--strategy", "finetune,er", "--ordering", "fuzzy", "--ordering-param", "width=nan"], "must be a finite number"),
    (["--seeds", "18446744073709551616"], "seed 18446744073709551616 is too large: seeds go from 0 to 4294967295"),
    (["--seeds", "0-99999999999"], "names 100,000,000,000 seeds; at most 10,000 at once"),
    (["--strategy", "finetune,finetune"], "finetune is named twice"),
    # a stream absurd for its data is refused up front with what it would need, not built for minutes
    (["--ordering", "recurring", "--ordering-param", "budget=100000"], "passes over the 1,295 training samples"),
    (["--iterations", "10000000"], "this stream would take 50,000,000 updates"),
])
def test_bad_command_line_values_are_one_line(capsys, tmp_path, args, message):
    given = {a for a in args if a.startswith("--")} | ({"--seeds"} if "--seed" in args else set())
    base = [a for i, a in enumerate(TINY) if a not in given and not (i and TINY[i - 1] in given)]
    out = tmp_path / "out"
    assert_refused(capsys, out, "run", *base, *args, "--out", str(out), message=message)


def test_data_of_the_wrong_shape_or_labels_is_refused_before_writing(capsys, tmp_path):
    out = tmp_path / "out"
    wide = tmp_path / "wide"
    make_idx_dataset(wide, side=32)
    assert_refused(capsys, out, "run", "--scenario", "split-mnist", *TINY, "--data-root", str(wide),
                   "--out", str(out), message="images have shape (1, 32, 32), not (1, 28, 28)")
    labels = tmp_path / "labels"
    make_idx_dataset(labels)
    write_idx(labels / "t10k-labels-idx1-ubyte.gz", (np.arange(30) % 12).astype(np.uint8))
    assert_refused(capsys, out, "run", "--scenario", "split-mnist", *TINY, "--data-root", str(labels),
                   "--out", str(out), message="test labels run from 0 to 11, outside 0..9")
    cifar = tmp_path / "cifar"
    make_cifar100(cifar)
    d = cifar / "cifar-100-python"
    with open(d / "train", "rb") as f:
        obj = pickle.load(f)
    obj[b"fine_labels"][5] = 100
    with open(d / "train", "wb") as f:
        pickle.dump(obj, f)
    assert_refused(capsys, out, "run", "--scenario", "split-cifar100", *TINY, "--data-root", str(cifar),
                   "--out", str(out), message="training labels run from 0 to 100, outside 0..99")


def test_an_output_folder_that_cannot_be_written_is_one_line(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_refused(capsys, tmp_path / "none", "run", *TINY, "--out", str(afile), message="is a file, not a folder")
    assert afile.read_text() == "x"
    assert_refused(capsys, afile / "sub", "run", *TINY, "--out", str(afile / "sub"), message="cannot write results")
    assert_refused(capsys, Path("/proc/clbench-test"), "run", *TINY, "--out", "/proc/clbench-test",
                   message="cannot write results to /proc/clbench-test")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One small finished experiment (two strategies, one seed)."""
    root = tmp_path_factory.mktemp("finished")
    run_experiment(Experiment(name="f", strategies=["finetune", "er"], seeds=[0], iterations=4, eval_every=2,
                              eval_subset=10), root, show_progress=False)
    return root


@pytest.mark.parametrize("damage", ["curves", "summary", "summary-not-a-run"])
@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_on_corrupt_result_files_are_one_line(capsys, tmp_path, finished, damage, command):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    run = root / "runs" / "split-digits" / "er" / "seed0"
    if damage == "curves":
        (run / "curves.csv").write_text('eval_step,iteration\n0,"unterminated\n')
    elif damage == "summary":
        (run / "summary.json").write_text('{"acc": 0.5,')
    else:
        (run / "summary.json").write_text("[1, 2]")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    code, _, err = invoke(capsys, command, str(root))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(run) in err and ("corrupt" in err or "not a run summary" in err)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing rewritten


# ---------------------------------------------------------------- failure isolation


@pytest.fixture
def exploding_strategy(monkeypatch):
    from clbench.strategies import registry
    from clbench.strategies.base import Finetune

    class Explodes(Finetune):
        name = "explodes"

        def observe(self, x, y, task_ids=None):
            if self.generator.initial_seed() == 1 + 104729:
                raise RuntimeError("out of cheese")
            return super().observe(x, y, task_ids)

    monkeypatch.setitem(registry.REGISTRY, "explodes", registry.StrategyEntry(
        "explodes", lambda model, optimizer=None, **kw: Explodes(model, optimizer, **kw), (Explodes,),
        "test strategy", {}))
    return "explodes"


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(capsys, tmp_path, exploding_strategy):
    out = tmp_path / "out"
    code, stdout, err = invoke(capsys, "run", "--jobs", "1", "--strategy", "finetune,explodes", "--seeds", "0,1",
                               "--iterations",
                               "3", "--eval-every", "3", "--eval-subset", "10", "--quiet", "--no-plots",
                               "--out", str(out))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("clbench: 1 run(s) failed, the rest finished")
    assert "out of cheese" in err and "Traceback" not in err
    error = json.loads((out / "runs/split-digits/explodes/seed1/error.json").read_text())
    assert error["error"] == "RuntimeError: out of cheese" and "Traceback" in error["traceback"]
    assert error["run"]["seed"] == 1
    lb = pd.read_csv(out / "leaderboard.csv").set_index("strategy")
    assert lb.loc["finetune", "n_seeds"] == 2 and lb.loc["explodes", "n_seeds"] == 1
    assert lb.loc["explodes", "n_failed"] == 1 and lb.loc["finetune", "n_failed"] == 0
    md = (out / "leaderboard.md").read_text()
    assert "1 (1 FAILED)" in md and "explodes seed1 FAILED (RuntimeError: out of cheese)" in md
    assert "1 (1 FAILED)" in stdout
    # the next invocation retries the failed run only
    counts = run_experiment(Experiment.from_mapping({
        "strategies": ["finetune", "explodes"], "seeds": [0, 1], "iterations": 3, "eval_every": 3,
        "eval_subset": 10}), out, show_progress=False)
    assert (counts["done"], counts["skipped"], counts["failed"]) == (0, 3, 1)


def test_the_process_pool_isolates_failures_the_same_way(tmp_path):
    good = RunConfig(strategy="finetune", iterations=3, eval_every=3, eval_subset=10)
    bad = RunConfig(scenario="split-mnist", strategy="finetune", data_root=str(tmp_path / "no-data"))
    outcomes = list(executors.process_pool([(bad, tmp_path / "bad"), (good, tmp_path / "good")], jobs=2))
    by_out = {o.out.name: o for o in outcomes}
    assert by_out["good"].summary is not None and not by_out["good"].failed
    assert by_out["bad"].failed and "MNIST is not here" in by_out["bad"].error
    assert (tmp_path / "bad" / "error.json").is_file() and (tmp_path / "good" / "summary.json").is_file()


# ---------------------------------------------------------------- divergence

def test_the_divergence_rule_on_hand_made_losses():
    healthy = np.r_[np.linspace(2.3, 0.1, 40), np.full(10, 5.0), np.linspace(3, 0.2, 40)]  # a task switch
    assert diverged_at(healthy) is None
    assert diverged_at(np.r_[np.full(12, 2.3), [np.nan], np.full(5, 2.3)]) == 13
    assert diverged_at(np.r_[[np.inf], np.full(5, 2.3)]) == 1
    blowup = np.r_[np.full(20, 2.3), np.full(30, 6.3e11)]
    assert diverged_at(blowup) == 25  # half the window is huge: its median (the middle pair's mean) is
    spike = np.r_[np.full(20, 2.3), [1e9], np.full(20, 2.3)]
    assert diverged_at(spike) is None  # one spike is not divergence
    # a first task learnt within the first window, then a class-incremental switch that jumps to 50 and
    # decays (EWC on split-digits): the reference is the untrained loss, not the learnt task's
    quick = np.r_[[2.19, 1.73, 1.05, 0.43, 0.2, 0.055, 0.03, 0.028, 0.0, 0.002], np.full(30, 0.01),
                  np.geomspace(50, 2.5, 40)]
    assert diverged_at(quick) is None
    assert diverged_at(np.r_[quick, np.full(10, 300.0)]) == len(quick) + 6
    assert diverged_at(np.array([])) is None


def test_a_blow_up_that_never_comes_down_and_a_task_never_learnt_are_divergence():
    from clbench.evaluation import metrics

    # DER at split-digits' default lr: 2.1 at the start, then 30-1,700 through tasks 2-5; the running
    # median (187 at most) never reaches 100x the start (215), but no task's loss comes back down
    der = np.r_[np.linspace(2.1, 0.3, 40), np.tile([30, 60, 120, 187, 250, 90, 45, 160, 300, 1700], 16)]
    tasks = np.repeat(np.arange(5), 40)
    assert diverged_at(der) is None  # the old rule alone missed it
    assert diverged_at(der, tasks) == 40 + 10  # task 1's first window of ten, all above 10x 2.1
    # a healthy class-incremental switch (to 50, back to 2.5 within 40 steps) is not
    quick = np.r_[np.linspace(2.2, 0.01, 40), np.geomspace(50, 2.5, 40)]
    assert diverged_at(quick, np.repeat([0, 1], 40)) is None
    # a task never learnt: 0 at the end of its own training, below half of chance (1/10)
    rows = [{"eval_step": k, "iteration": it, "trained_task": tt, "task": task, "accuracy": acc, "n": 10}
            for k, (it, tt, accs) in enumerate([(0, -1, [0.1, 0.1]), (40, 0, [0.0, 0.1]), (80, 1, [0.0, 0.9])])
            for task, acc in enumerate(accs)]
    log = pd.DataFrame(rows)
    chance = metrics.chance_levels("class-il", 10, [[0, 1], [2, 3]])
    assert metrics.never_learnt(log, chance) == [0]
    at, why = metrics.divergence(np.full(80, 1.0), np.repeat([0, 1], 40), log, chance)  # a flat loss
    assert at == 40 and why.startswith("task 0 never learnt")
    # ... but a task whose loss fell was learning, only too briefly: not a broken run
    assert metrics.divergence(np.r_[np.linspace(2.3, 1.0, 40), np.full(40, 1.0)], np.repeat([0, 1], 40), log,
                              chance)[0] is None
    healthy = log.assign(accuracy=np.where(log["task"] == 0, 0.9, log["accuracy"]))
    assert metrics.divergence(np.full(80, 1.0), np.repeat([0, 1], 40), healthy, chance)[0] is None
    # in task-incremental learning chance is among the task's own classes: 0.2 of 2 classes is below 0.25
    assert metrics.never_learnt(healthy.assign(accuracy=0.2), metrics.chance_levels("task-il", 4, [[0, 1], [2, 3]])) \
        == [0, 1]


def test_a_task_erased_by_a_recurring_one_before_the_next_new_task_was_learnt():
    """A recurring stream: task 0, task 1, task 0 again, task 2. Finetuning on the recurrence erases
    task 1 before its phase ends (R[1, 1] = 0), but at the end of its own updates it was at 0.9."""
    from clbench.evaluation import metrics

    tasks = np.r_[np.zeros(40), np.ones(40), np.zeros(20), np.full(40, 2)].astype(int)
    points = [(0, -1, [0.1, 0.1, 0.1]), (40, 0, [0.9, 0.0, 0.0]), (80, 1, [0.0, 0.9, 0.0]), (100, 0, [0.9, 0.0, 0.0]),
              (140, 2, [0.0, 0.0, 0.9])]
    log = pd.DataFrame([{"eval_step": k, "iteration": it, "trained_task": tt, "task": task, "accuracy": acc, "n": 10}
                        for k, (it, tt, accs) in enumerate(points) for task, acc in enumerate(accs)])
    chance = metrics.chance_levels("class-il", 6, [[0, 1], [2, 3], [4, 5]])
    assert metrics.accuracy_matrix(log)[1, 1] == 0.0  # the phase's end, after the recurrence
    flat = np.full(len(tasks), 1.0)  # a loss that never fell: only the accuracy decides
    assert metrics.never_learnt(log, chance, flat, tasks) == []
    assert metrics.divergence(flat, tasks, log, chance)[0] is None
    erased = log.assign(accuracy=np.where((log["iteration"] == 80) & (log["task"] == 1), 0.0, log["accuracy"]))
    assert metrics.never_learnt(erased, chance, flat, tasks) == [1]  # 0 at its own end: never learnt


def test_a_diverged_run_is_marked_everywhere_and_ranks_last(capsys, tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "exp.toml"
    cfg.write_text('strategies = ["finetune", "er"]\nseeds = [0]\niterations = 20\neval_every = 5\n'
                   'eval_subset = 20\n[params.er]\nw_new = 0.5\n')
    code, stdout, err = invoke(capsys, "run", "--config", str(cfg), "--out", str(out), "--quiet", "--no-plots")
    assert code == 0, err
    # make ER's run diverge: same experiment, ER's learning rate far too high, in a second folder
    out2 = tmp_path / "out2"
    code, stdout, err = invoke(capsys, "run", "--config", str(cfg), "--lr", "1e4", "--out", str(out2), "--quiet")
    assert code == 0, err
    summaries = {s: json.loads((out2 / f"runs/split-digits/{s}/seed0/summary.json").read_text())
                 for s in ("finetune", "er")}
    assert all(s["diverged_at"] is not None for s in summaries.values())
    assert "diverged at iteration" in err
    # merge: the healthy finetune row must rank above both diverged rows whatever their metrics
    lb = write_leaderboard([out, out2], tmp_path / "merged", allow_different=True)
    diverged = lb["n_diverged"] > 0
    assert diverged.tolist() == sorted(diverged.tolist())  # every diverged row after every healthy one
    text = to_text(people_table(lb))
    assert "1 (1 DIVERGED)" in text
    md = (tmp_path / "merged" / "leaderboard.md").read_text()
    assert "DIVERGED" in md and "ranks last" in md
    names = [k[1] for k in _load([out2])[0]]
    assert all(n.endswith("(1 DIVERGED)") for n in names)


# ---------------------------------------------------------------- same numbers on every executor

def test_jobs_1_and_jobs_2_give_byte_identical_curves(capsys, tmp_path):
    args = ["run", "--scenario", "split-digits", "--strategy", "gem,finetune", "--seeds", "0,1", "--epochs", "1",
            "--quiet", "--no-plots"]
    assert invoke(capsys, *args, "--jobs", "1", "--out", str(tmp_path / "j1"))[0] == 0
    assert invoke(capsys, *args, "--jobs", "2", "--out", str(tmp_path / "j2"))[0] == 0
    for strategy in ("gem", "finetune"):
        for seed in (0, 1):
            run = f"runs/split-digits/{strategy}/seed{seed}"
            assert (tmp_path / "j1" / run / "curves.csv").read_bytes() == \
                (tmp_path / "j2" / run / "curves.csv").read_bytes()
            assert json.loads((tmp_path / "j1" / run / "config.json").read_text())["run"]["threads"] == 1


# ---------------------------------------------------------------- interruption and orphans

def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start(tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clbench.cli", "run", "--strategy", "finetune,er,ewc,gem",
                             "--seeds", "0,1", "--jobs", "2", "--quiet", "--no-plots", "--out", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(predicate, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sigkill_of_the_parent_leaves_no_worker_running(tmp_path):
    proc = _start(tmp_path)
    try:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 3)  # two workers and the resource tracker
        kids = _children(proc.pid)
        proc.kill()
        proc.wait()
        assert _wait_for(lambda: not any(_alive(k) for k in kids), timeout=30), \
            [k for k in kids if _alive(k)]
    finally:
        for k in _children(proc.pid):
            os.kill(k, signal.SIGKILL)


@pytest.mark.slow
def test_sigint_says_what_was_kept_and_how_to_resume(tmp_path):
    proc = _start(tmp_path)
    assert _wait_for(lambda: any((tmp_path / "o" / "runs").glob("*/*/seed*/summary.json")))
    kids = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    line = err.strip().splitlines()[-1]
    assert "runs are complete and kept in" in line and "resume with: clbench run --strategy finetune,er" in line
    assert "Traceback" not in err
    assert _wait_for(lambda: not any(_alive(k) for k in kids), timeout=30)


def test_interrupted_experiment_reports_what_is_complete(tmp_path):
    def stop(config, summary):
        raise KeyboardInterrupt

    exp = Experiment(strategies=["finetune"], seeds=[0, 1], iterations=3, eval_every=3, eval_subset=10)
    with pytest.raises(Interrupted) as info:
        run_experiment(exp, tmp_path, show_progress=False, on_done=stop)
    assert (info.value.complete, info.value.total) == (1, 2)
    assert (run_dir(tmp_path, exp.run_configs()[0]) / "summary.json").is_file()


# ---------------------------------------------------------------- files follow the umask

@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_result_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        run_experiment(Experiment(strategies=["finetune"], seeds=[0], iterations=3, eval_every=3, eval_subset=10),
                       tmp_path / "o", show_progress=False)
        write_leaderboard([tmp_path / "o"], tmp_path / "o")
    finally:
        os.umask(old)
    run = tmp_path / "o" / "runs" / "split-digits" / "finetune" / "seed0"
    for f in [*run.iterdir(), tmp_path / "o" / "experiment.toml", tmp_path / "o" / "leaderboard.csv"]:
        assert f.stat().st_mode & 0o777 == file_mode, f
    assert run.stat().st_mode & 0o777 == dir_mode


def test_direct_construction_checks_the_same_declarations():
    from torch import nn

    from clbench.strategies.replay import ER

    with pytest.raises(InputError, match="mem_size=-1: input should be greater than or equal to 0"):
        ER(nn.Linear(2, 2), mem_size=-1)
    with pytest.raises(InputError, match="run: seed=-1"):
        from clbench.run.runner import run

        run(RunConfig(seed=-1))


def test_default_jobs_fill_the_cores_on_cpu_and_one_on_a_gpu():
    from clbench.sweep.processes import default_jobs

    cores = len(os.sched_getaffinity(0))
    assert default_jobs(1) == cores and default_jobs(cores) == 1 and default_jobs(4 * cores) == 1
    assert default_jobs(1, "cuda:0") == 1


def test_merged_experiments_with_other_settings_stay_separate_rows(tmp_path):
    for name, lr in (("a", 0.05), ("b", 0.01)):
        run_experiment(Experiment(strategies=["finetune"], seeds=[0], iterations=3, eval_every=3, eval_subset=10,
                                  lr=lr), tmp_path / name, show_progress=False)
    with pytest.raises(InputError, match="finetune: the experiments' runs differ in lr; pass --allow-different"):
        write_leaderboard([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    lb = write_leaderboard([tmp_path / "a", tmp_path / "b"], tmp_path / "m", allow_different=True)
    assert sorted(lb["label"]) == ["finetune [lr=0.01]", "finetune [lr=0.05]"]
    assert lb["n_runs"].tolist() == [1, 1]


def test_report_refuses_to_count_a_run_twice(capsys, tmp_path):
    exp = Experiment(strategies=["finetune"], seeds=[0, 1], iterations=3, eval_every=3, eval_subset=10)
    run_experiment(exp, tmp_path / "a", show_progress=False)
    run_experiment(dataclasses.replace(exp, seeds=[0]), tmp_path / "b", show_progress=False)
    code, _, err = invoke(capsys, "report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"))
    assert code == 2 and "both hold split-digits finetune seed 0 with the same settings" in err, err
    assert not (tmp_path / "m").exists()


def test_force_replaces_the_folders_experiment(capsys, tmp_path):
    out = tmp_path / "out"
    base = ["run", "--strategy", "finetune", "--eval-every", "3", "--eval-subset", "10", "--quiet", "--no-plots",
            "--out", str(out)]
    assert invoke(capsys, *base, "--iterations", "3", "--seeds", "0,1,2")[0] == 0
    assert invoke(capsys, *base, "--iterations", "6", "--seeds", "0", "--force")[0] == 0
    lb = pd.read_csv(out / "leaderboard.csv")
    assert lb["seeds"].astype(str).tolist() == ["0"] and lb["iterations_mean"].tolist() == [30]
    assert sorted(p.name for p in (out / "runs/split-digits/finetune").iterdir()) == ["seed0"]
