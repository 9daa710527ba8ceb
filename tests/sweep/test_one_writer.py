"""One experiment folder, one writer; ``--force`` deletes only what clbench wrote; no run folder
outside ``--out``; staging folders of killed runs cleaned (issue #28)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clbench.common.io import path_segment
from clbench.common.lock import LOCK_FILE
from clbench.run.runner import RunConfig
from clbench.sweep.experiment import run_dir
from tests.helpers import invoke

QUICK = ["--strategy", "finetune", "--eval-every", "3", "--eval-subset", "10", "--quiet", "--no-plots"]

HOLD = """
import sys, time
from pathlib import Path
from clbench.common.lock import folder_lock
with folder_lock(Path(sys.argv[1]), "clbench run"):
    print("held", flush=True)
    time.sleep(120)
"""


def _clbench(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_command_on_a_folder_in_use_is_refused_and_a_dead_holder_s_lock_is_not_in_the_way(capsys, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0", "--out", out)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"in use by another clbench command (clbench run, pid {holder.pid}" in err, err
        assert not (out / "experiment.toml").exists()  # refused before anything was written
        code, _, err = invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0", "--out", out, "--force")
        assert code == 2 and "in use by another clbench command" in err  # nor may --force delete its work
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash would: the kernel releases the lock
        holder.wait()
    assert invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0", "--out", out)[0] == 0


def test_two_concurrent_runs_with_different_settings_never_mix(tmp_path):
    out, release = tmp_path / "exp", tmp_path / "release"
    # the first holds the folder until the test releases it (its first update waits for the file)
    args = ["--strategy", "tests.faulty:WaitsForRelease", "--param", f"tests.faulty:WaitsForRelease.release={release}",
            "--iterations", "3", "--eval-every", "3", "--eval-subset", "10", "--quiet", "--no-plots", "--seeds", "0,1",
            "--jobs", "1", "--out", str(out)]
    first = _clbench("run", *args, "--lr", "0.05")
    try:
        deadline = time.monotonic() + 120
        while not ((out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text()):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = _clbench("run", *args, "--lr", "0.01")
        _, err = second.communicate(timeout=120)
        assert first.poll() is None  # still waiting: the second came while it held the folder
    finally:
        release.touch()
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and "in use by another clbench command (clbench run" in err, err
    configs = [json.loads(p.read_text())["run"] for p in (out / "runs").rglob("config.json")]
    assert len(configs) == 2 and {c["lr"] for c in configs} == {0.05}
    assert "lr = 0.05" in (out / "experiment.toml").read_text()


def test_force_refuses_a_folder_that_holds_no_experiment(capsys, tmp_path):
    home = tmp_path / "home"
    (home / "plots").mkdir(parents=True)
    (home / "plots" / "fig1.pdf").write_text("thesis")
    code, _, err = invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0", "--out", home, "--force")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds no clbench experiment" in err and "refusing to delete" in err
    assert (home / "plots" / "fig1.pdf").read_text() == "thesis"


def test_force_keeps_a_file_clbench_did_not_write(capsys, tmp_path):
    out = tmp_path / "exp"
    assert invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0,1", "--out", out)[0] == 0
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "fig1.pdf").write_text("mine")
    (out / "plots" / "split-digits_bars.png").write_bytes(b"old plot")
    code, stdout, err = invoke(capsys, "run", *QUICK, "--iterations", "6", "--seeds", "0", "--out", out, "--force")
    assert code == 0, err
    assert (out / "plots" / "fig1.pdf").read_text() == "mine" and "kept 1 file(s) clbench did not write" in stdout + err
    assert not (out / "plots" / "split-digits_bars.png").exists()
    assert sorted(p.name for p in (out / "runs" / "split-digits" / "finetune").iterdir()) == ["seed0"]


def test_no_parameter_value_makes_a_run_folder_outside_the_experiment(capsys, tmp_path):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    out = work / "exp"
    escaping = "nmc.backbone=pixels,checkpoint:../../../x/m.pt"
    code, _, err = invoke(capsys, "run", "--strategy", "nmc", "--param", escaping, "--seeds", "0", "--iterations", "3",
                          "--eval-subset", "10", "--quiet", "--no-plots", "--out", out)
    assert code == 1 and "checkpoint ../../../x/m.pt does not exist" in err  # that run failed, recorded
    made = {p for p in tmp_path.rglob("*")}
    assert all(p == out or out in p.parents or p in out.parents for p in made), sorted(made)
    folders = sorted(p.parent.relative_to(out) for p in out.rglob("error.json"))
    assert folders == [Path("runs/split-digits/nmc[backbone=checkpoint%3A..%2F..%2F..%2Fx%2Fm.pt]/seed0")]
    for text in ("..", ".", "a/../../b", "..\\x", "%2F"):
        segment = path_segment(text)
        assert "/" not in segment and "\\" not in segment and not segment.startswith(".")
        assert run_dir(tmp_path, RunConfig(scenario=text, strategy=text)).parent.parent.parent == tmp_path / "runs"


def test_staging_folders_of_killed_runs_are_cleaned_at_the_next_invocation(capsys, tmp_path):
    out = tmp_path / "exp"
    assert invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0", "--out", out)[0] == 0
    staging = out / "runs" / "split-digits" / "finetune" / ".seed1.k3j_x.partial"
    staging.mkdir()
    (staging / "curves.csv").write_text("half a file")
    assert invoke(capsys, "run", *QUICK, "--iterations", "3", "--seeds", "0,1", "--out", out)[0] == 0
    assert not staging.exists() and (out / "runs" / "split-digits" / "finetune" / "seed1" / "summary.json").is_file()
    assert sorted(os.listdir(out / "runs" / "split-digits" / "finetune")) == ["seed0", "seed1"]


def test_a_run_reported_done_whose_folder_is_not_here_is_a_failed_run(tmp_path):
    """As a Ray worker on a node that does not share --out reports: done, with its folder elsewhere."""
    import shutil

    from clbench.sweep import executors
    from clbench.sweep.experiment import Experiment, run_experiment

    def elsewhere(todo):
        for outcome in executors.serial(todo):
            if outcome.config.seed == 1:
                shutil.rmtree(outcome.out)  # the folder went to another node's disk
            yield outcome

    exp = Experiment(strategies=["finetune"], seeds=[0, 1], iterations=3, eval_every=3, eval_subset=10)
    counts = run_experiment(exp, tmp_path / "exp", show_progress=False, executor=elsewhere)
    assert counts["done"] == 1 and counts["failed"] == 1
    lost = counts["failures"][0]
    assert lost.config.seed == 1 and "reported done, but its folder" in lost.error
    assert "missing or incomplete here" in json.loads((lost.out / "error.json").read_text())["error"]
    # the next invocation retries it (its folder is incomplete), as any failed run
    again = run_experiment(exp, tmp_path / "exp", show_progress=False)
    assert again["done"] == 1 and again["skipped"] == 1
