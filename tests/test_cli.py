"""The command line: bad input is one line and exit code 2; experiments resume; the leaderboard
matches the runs; every plot is drawn."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clbench.results.leaderboard import write_leaderboard
from clbench.results.plots import plot_all
from clbench.scenarios import InputError
from clbench.sweep.experiment import Experiment, parse_seeds, run_dir, run_experiment
from tests.helpers import clbench, invoke

FAST = ["--eval-every", "5", "--epochs", "1", "--quiet", "--no-plots"]


@pytest.mark.parametrize("args,message", [
    (["run", "--scenario", "split-nothing"], "unknown scenario 'split-nothing'"),
    (["run", "--strategy", "icarl"], "unknown strategy 'icarl'"),
    (["run", "--seeds", "3-1"], "seed range '3-1' is empty"),
    (["run", "--strategy", "er", "--param", "er.memsize=5"], "no strategy in this experiment has a parameter"),
    (["run", "--strategy", "er", "--param", "mem_size=lots"], "should be a valid integer"),
    (["run", "--eval-subset", "many"], "eval_subset='many': must be a number of samples"),
    (["run", "--device", "cuda:7"], "CUDA is not available"),
    (["run", "--scenario", "split-digits", "--n-tasks", "3"], "cannot split 10 classes into 3"),
    (["report", "/nonexistent/folder"], "is not a folder"),
    (["run", "--scenario", "split-mnist", "--data-root", "/nonexistent"], "MNIST is not here: put the four IDX files"),
    (["run", "--ordering", "fuzzy", "--ordering-param", "widht=3"], "has no parameter widht"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    r = clbench(*args, "--out", str(tmp_path / "x")) if args[0] == "run" else clbench(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_input_from_the_console_script_is_one_line_in_a_fresh_process(tmp_path):
    script = Path(sys.executable).with_name("clbench")
    r = subprocess.run([str(script), "run", "--strategy", "icarl", "--out", str(tmp_path / "x")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("clbench: error: unknown strategy 'icarl'; known strategies: ")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_malformed_toml_and_foreign_experiment_folder(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("scenarios = [split-digits\n")
    r = clbench("run", "--config", str(bad), "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "is not valid TOML" in r.stderr
    out = tmp_path / "exp"
    assert clbench("run", "--strategy", "finetune", "--seeds", "0", *FAST, "--out", str(out)).returncode == 0
    r = clbench("run", "--strategy", "finetune", "--seeds", "0", "--eval-every", "7", "--epochs", "1", "--quiet",
                "--no-plots", "--out", str(out))
    assert r.returncode == 2 and "holds a different experiment (it differs in eval_every)" in r.stderr


def test_single_run_from_the_command_line(tmp_path):
    r = clbench("run", "--scenario", "split-digits", "--strategy", "finetune", "--seed", "0", "--eval-every", "1",
                "--out", str(tmp_path / "r"), "--quiet")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "r" / "runs" / "split-digits" / "finetune" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["acc"] < 0.3 and summary["bwt"] < -0.8
    assert "finetune" in r.stdout and (tmp_path / "r" / "leaderboard.csv").is_file()
    assert len(list((tmp_path / "r" / "plots").glob("*.png"))) == 5


def test_toml_config_and_flags_override(tmp_path):
    cfg = tmp_path / "e.toml"
    cfg.write_text('name = "t"\nscenarios = ["split-digits"]\nstrategies = ["er"]\nseeds = [1]\neval_every = 9\n'
                   'epochs = 1\n[params.er]\nmem_size = 30\n')
    r = clbench("run", "--config", str(cfg), "--eval-every", "4", "--quiet", "--no-plots", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    conf = json.loads((tmp_path / "o/runs/split-digits/er/seed1/config.json").read_text())
    assert conf["run"]["eval_every"] == 4 and conf["strategy"]["mem_size"] == 30
    assert "eval_every = 4" in (tmp_path / "o" / "experiment.toml").read_text()


def test_list_commands():
    r = clbench("list", "scenarios")
    assert r.returncode == 0 and "split-digits" in r.stdout and "yes" in r.stdout
    r = clbench("list", "strategies")
    assert "mem_size=200" in r.stdout and "ewc_lambda" in r.stdout and "vb-er" in r.stdout
    assert "min_acc" in clbench("list", "metrics").stdout


def test_seed_parsing():
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(InputError):
        parse_seeds("a")
    with pytest.raises(InputError):
        parse_seeds("1,1")


def _small_experiment(**kw):
    return Experiment(name="t", strategies=["finetune", "er"], seeds=[0, 1], eval_every=5, epochs=1, **kw)


def test_interrupted_experiment_resumes_without_redoing_or_counting_partial_runs(tmp_path):
    exp = _small_experiment()
    done = []

    def interrupt_after_first(config, summary):
        done.append((config.strategy, config.seed))
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, tmp_path, show_progress=False, on_done=interrupt_after_first)
    # a run killed mid-write leaves only its staging folder behind
    configs = exp.run_configs()
    partial = run_dir(tmp_path, configs[2]).parent / ".seed0.killed.partial"
    partial.mkdir(parents=True)
    (partial / "curves.csv").write_text("eval_step,iteration\n0,")
    first_mtime = (run_dir(tmp_path, configs[0]) / "summary.json").stat().st_mtime_ns
    lb_partial = write_leaderboard([tmp_path], tmp_path)
    assert lb_partial["n_seeds"].sum() == 2  # only the two complete runs count

    counts = run_experiment(exp, tmp_path, show_progress=False)
    assert counts == {"done": 2, "skipped": 2, "failed": 0, "failures": [], "nodes": {}}
    assert (run_dir(tmp_path, configs[0]) / "summary.json").stat().st_mtime_ns == first_mtime
    lb = write_leaderboard([tmp_path], tmp_path)
    assert lb["n_seeds"].tolist() == [2, 2]
    assert run_experiment(exp, tmp_path, show_progress=False) == {"done": 0, "skipped": 4, "failed": 0, "failures": [],
                                                                 "nodes": {}}
    assert run_experiment(exp, tmp_path, force=True, show_progress=False)["done"] == 4


def test_leaderboard_matches_run_summaries_and_plots_are_drawn(tmp_path):
    exp = _small_experiment(params={"er": {"mem_size": 50}})
    run_experiment(exp, tmp_path, show_progress=False)
    lb = write_leaderboard([tmp_path], tmp_path).set_index("strategy")
    for strategy in ("finetune", "er"):
        s = [json.loads((run_dir(tmp_path, c) / "summary.json").read_text())
             for c in exp.run_configs() if c.strategy == strategy]
        for m in ("acc", "min_acc", "wc_acc", "bwt", "wf10", "gap_depth"):
            vals = np.array([x[m] for x in s], dtype=float)
            if np.isnan(vals).all():  # finetune's gap: its dips never came back (forgetting)
                assert np.isnan(lb.loc[strategy, f"{m}_mean"]) and lb.loc[strategy, f"{m}_n"] == 0
                continue
            assert lb.loc[strategy, f"{m}_mean"] == pytest.approx(vals.mean())
            assert lb.loc[strategy, f"{m}_std"] == pytest.approx(np.sqrt(((vals - vals.mean()) ** 2).sum() / 1))
        assert lb.loc[strategy, "n_seeds"] == 2
    assert lb.loc["er", "params"] == '{"mem_size": 50}'
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(csv["strategy"]) == ["er", "finetune"]  # sorted by ACC
    assert "±" in (tmp_path / "leaderboard.md").read_text()
    files = plot_all([tmp_path], tmp_path / "plots")
    names = {f.name for f in files}
    assert names == {"split-digits_mean_accuracy.png", "split-digits_gap_zoom.png", "split-digits_matrix.png",
                     "split-digits_bars.png", "split-digits_tasks_finetune.png", "split-digits_tasks_er.png"}
    assert all(f.stat().st_size > 10_000 for f in files)


def test_report_merges_experiments(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_experiment(Experiment(strategies=["finetune"], seeds=[0], eval_every=10, epochs=1), a, show_progress=False)
    run_experiment(Experiment(strategies=["er"], seeds=[0], eval_every=10, epochs=1), b, show_progress=False)
    r = clbench("report", str(a), str(b), "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    merged = pd.read_csv(tmp_path / "merged" / "leaderboard.csv")
    assert sorted(merged["strategy"]) == ["er", "finetune"]
    r = clbench("plot", str(a))
    assert r.returncode == 0 and r.stdout.count(".png") == 5


def test_parallel_jobs_give_the_same_numbers(tmp_path):
    exp = Experiment(strategies=["finetune", "er"], seeds=[0], eval_every=5, epochs=1)
    run_experiment(exp, tmp_path / "serial", show_progress=False)
    run_experiment(exp, tmp_path / "parallel", jobs=2, show_progress=False)
    for c in exp.run_configs():
        a = (run_dir(tmp_path / "serial", c) / "curves.csv").read_text()
        b = (run_dir(tmp_path / "parallel", c) / "curves.csv").read_text()
        assert a == b


def test_a_param_with_several_values_is_a_sweep_with_a_row_each(tmp_path):
    out = tmp_path / "out"
    r = clbench("run", "--strategy", "er,finetune", "--param", "er.mem_size=50,200", "--seeds", "0", "--iterations",
                "3", "--eval-every", "3", "--eval-subset", "10", "--quiet", "--no-plots", "--jobs", "1",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "runs/split-digits").iterdir()) == [
        "er[mem_size=200]", "er[mem_size=50]", "finetune"]
    lb = pd.read_csv(out / "leaderboard.csv")
    assert sorted(lb["label"]) == ["er [mem_size=200]", "er [mem_size=50]", "finetune"]
    held = {row.label: row.memory_samples_mean for row in lb.itertuples()}
    assert held["er [mem_size=50]"] == 50 and held["er [mem_size=200]"] <= 200
    # the same sweep from TOML, where a list is the sweep
    (tmp_path / "e.toml").write_text('strategies = ["er"]\nseeds = [0]\niterations = 3\neval_every = 3\n'
                                     'eval_subset = 10\n[params.er]\nmem_size = [50, 200]\n')
    r = clbench("run", "--config", str(tmp_path / "e.toml"), "--quiet", "--no-plots", "--jobs", "1", "--out",
                str(tmp_path / "toml"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "toml/runs/split-digits").iterdir())) == 2


def test_a_param_given_twice_is_refused(tmp_path):
    r = clbench("run", "--strategy", "er", "--param", "mem_size=50", "--param", "mem_size=200", "--out",
                str(tmp_path / "o"))
    assert r.returncode == 2 and "--param mem_size is given twice" in r.stderr and "mem_size=a,b" in r.stderr
    assert not (tmp_path / "o").exists()


def test_the_readme_own_data_example_runs_verbatim(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- own-data -->\s*```python\n(.*?)```", readme, re.S).group(1)
    command = re.search(r"<!-- own-data-run -->\s*```bash\n(.*?)```", readme, re.S).group(1).strip()
    (tmp_path / "my_data.py").write_text(code)
    script = Path(sys.executable).with_name("clbench")  # the console script: its sys.path lacks the cwd
    assert command.startswith("clbench ") and script.is_file()
    r = subprocess.run([str(script), *shlex.split(command)[1:], "--quiet", "--no-plots"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lb = pd.read_csv(tmp_path / "results/own-data/leaderboard.csv").set_index("strategy")
    assert lb.loc["er", "n_seeds"] == 2 and lb.loc["er", "acc_mean"] > 0.9
    # what the README says it shows: finetune forgets (its first task is lost), ER does not
    assert lb.loc["finetune", "acc_mean"] < 0.8 and lb.loc["finetune", "bwt_mean"] < -0.3
    assert lb.loc["er", "bwt_mean"] > -0.1 and lb["n_diverged"].eq(0).all()
    config = json.loads((tmp_path / "results/own-data/runs/my_data%3Ablobs/er/seed0/config.json").read_text())
    assert config["scenario"]["n_tasks"] == 3 and config["scenario"]["source"] == "own data"


def test_own_data_is_checked_in_one_line(tmp_path):
    from clbench.scenarios import from_arrays

    x = np.zeros((12, 4, 4), dtype=np.uint8)
    y = np.arange(12) % 4
    for args, message in [((x, y, x, y, 3), "cannot split 4 classes into 3 equal tasks"),
                          ((x.astype(float) * 3 + 2, y, x, y, 2), "float images must lie in [0, 1]"),
                          ((x, y[:5], x, y, 2), "y_train must be 12 whole-number labels"),
                          ((x[:, :, :2], y, x, y, 2), "train and test images differ in shape"),
                          ((x, y - 1, x, y, 2), "labels must be 0, 1, 2")]:
        with pytest.raises(InputError, match=re.escape(message)):
            from_arrays(*args)
    r = clbench("run", "--scenario", "nowhere:blobs", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "cannot import scenario 'nowhere:blobs'" in r.stderr


def test_an_own_module_that_raises_on_import_is_one_line(capsys, tmp_path, monkeypatch):
    """Whatever a user's module raises while it is imported (not only ImportError), and a path that
    names nothing, is one line, exit 2, nothing written."""
    (tmp_path / "broken_strats.py").write_text("LIMIT = 1 / 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for strategy, message in [("broken_strats:Thing", "importing strategy 'broken_strats:Thing' raised "
                                                      "ZeroDivisionError: division by zero"),
                              (":", "strategy ':' is not an import path")]:
        code, _, err = invoke(capsys, "run", "--strategy", strategy, "--seeds", "0", "--out", tmp_path / "o")
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert not (tmp_path / "o").exists()


def test_installed_plugins_name_their_own_strategies_and_scenarios(tmp_path):
    """A package declaring entry points in the groups clbench.strategies / clbench.scenarios."""
    (tmp_path / "plugmod.py").write_text(
        "import numpy as np\nfrom clbench import scenarios\nfrom clbench.strategies import Finetune\n\n"
        "class Plain(Finetune):\n    '''Finetuning, from a plugin.'''\n\n"
        "def blobs(seed=0, val_fraction=0.1, **options):\n"
        "    y = np.repeat(np.arange(4), 20)\n"
        "    x = np.zeros((80, 6, 6), dtype=np.uint8)\n"
        "    for c in range(4):\n        x[y == c, c, :] = 250\n"
        "    return scenarios.from_arrays(x, y, x, y, n_tasks=2, name='blobs', seed=seed, val_fraction=val_fraction)\n")
    dist = tmp_path / "plugmod-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugmod\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clbench.strategies]\nplain = plugmod:Plain\n\n"
                                           "[clbench.scenarios]\nplug-blobs = plugmod:blobs\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])])}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "clbench.cli", "run", "--scenario", "plug-blobs", "--strategy",
                        "plain,er", "--seeds", "0", "--iterations", "3", "--quiet", "--no-plots", "--jobs", "2",
                        "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lb = pd.read_csv(out / "leaderboard.csv")
    assert sorted(lb["strategy"]) == ["er", "plain"] and set(lb["scenario"]) == {"blobs"}


def test_a_scenario_from_torchvision_datasets_and_an_image_folder(tmp_path):
    from PIL import Image
    from torchvision import datasets, transforms

    from clbench.scenarios import from_datasets

    for split in ("train", "test"):
        for c, name in enumerate(["cat", "dog", "eel", "fox"]):
            (tmp_path / split / name).mkdir(parents=True)
            for k in range(5):
                image = Image.fromarray(np.full((7, 7, 3), 40 * c + k, dtype=np.uint8))
                image.save(tmp_path / split / name / f"{k}.png")
    folders = [datasets.ImageFolder(str(tmp_path / s), transform=transforms.ToTensor()) for s in ("train", "test")]
    sc = from_datasets(*folders, n_tasks=2, val_fraction=0.0)
    assert sc.input_shape == (3, 7, 7) and sc.task_classes == [[0, 1], [2, 3]]
    assert sc.meta["class_names"] == ["cat", "dog", "eel", "fox"]
    x, y = sc.tasks[1].test.batch()
    assert len(y) == 10 and sorted(set(y.tolist())) == [2, 3]
    raw = sc.tasks[0].train.x
    assert str(raw.dtype) == "torch.uint8" and int(raw.max()) == 40 + 4  # ToTensor's [0, 1] back to 0-255


def test_a_users_own_strategies_and_scenarios_modules_do_not_collide_with_clbench(tmp_path):
    """clbench installs its layers as clbench.scenarios and clbench.strategies: nothing named scenarios or
    strategies at the top of site-packages, so a user's strategies.py and scenarios.py are theirs."""
    (tmp_path / "strategies.py").write_text(
        "from clbench.strategies import ER\n\n"
        "class MyER(ER):\n    '''ER, as a user's own strategy.'''\n")
    (tmp_path / "scenarios.py").write_text(
        "import numpy as np\nfrom clbench import scenarios as cl\n\n"
        "def mine(seed=0, val_fraction=0.1, **options):\n"
        "    y = np.repeat(np.arange(4), 20)\n    x = np.zeros((80, 6, 6), dtype=np.uint8)\n"
        "    for c in range(4):\n        x[y == c, c, :] = 250\n"
        "    return cl.from_arrays(x, y, x, y, n_tasks=2, name='mine', seed=seed, val_fraction=val_fraction,\n"
        "                          **options)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("strategies", "scenarios"):
        r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=elsewhere, env=env, capture_output=True,
                           text=True)
        assert r.returncode == 1 and f"No module named '{name}'" in r.stderr
    script = Path(sys.executable).with_name("clbench")
    r = subprocess.run([str(script), "run", "--strategy", "strategies:MyER", "--scenario", "scenarios:mine",
                        "--seeds", "0", "--iterations", "3", "--quiet", "--no-plots", "--out", "out"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "out/runs/scenarios%3Amine/strategies%3AMyER/seed0/summary.json").read_text())
    assert summary["iterations"] == 6 and summary["memory_capacity"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.0, 2.0, 3.5])
def test_ctrl_c_in_the_first_seconds_is_one_line_and_130(tmp_path, delay):
    """A Ctrl-C (to the whole process group, as a terminal sends it) while torch is still being
    imported, by the CLI and by the workers' fork server: one line, exit 130, no traceback."""
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-c", "from clbench.cli import main; main()", "run", "--strategy",
                          "finetune,er", "--seeds", "0,1", "--jobs", "2", "--iterations", "20", "--out",
                          str(tmp_path / "o"), "--quiet", "--no-plots"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:  # finished before the signal (a fast machine): nothing to check
        return
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("clbench: interrupted;"), err


def test_a_full_disk_mid_way_is_one_line_and_exit_1(capsys, tmp_path, monkeypatch):
    """The machine refusing a write (ENOSPC; EACCES on a read-only folder) after the checks passed:
    its one line, not a traceback."""
    import errno

    from clbench.common import io

    assert invoke(capsys, "run", "--strategy", "finetune", "--seeds", "0", "--iterations", "3", "--eval-subset", "10",
                  "--quiet", "--no-plots", "--out", tmp_path / "e")[0] == 0

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "atomic_write_text", full)
    code, _, err = invoke(capsys, "report", tmp_path / "e")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "No space left on device" in err and "leaderboard.csv" in err
