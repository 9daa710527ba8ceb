"""A sweep across a real two-node Ray cluster on this machine, over loopback only, whose worker node
cannot see the driver's results folder (``tests/sweep/loopback_cluster.py`` builds it in namespaces
of its own): results come home through Ray, own modules reach the worker through Ray's runtime
environment, and a node killed mid-sweep loses nothing. Needs root (``unshare``); skipped, saying
why, where namespaces cannot be made."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.test_readme import README

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multinode")]

HELPER = Path(__file__).with_name("loopback_cluster.py")
NAMESPACES = ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc"]


def _namespaces_refused() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    probe = subprocess.run([*NAMESPACES, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"namespaces not permitted here: {probe.stderr.strip()[:200]}"


NO_NAMESPACES = _namespaces_refused()
needs_namespaces = pytest.mark.skipif(bool(NO_NAMESPACES), reason=str(NO_NAMESPACES))


def _project(tmp_path: Path) -> Path:
    """The driver's project folder, with the README's own-data module, under the folder the worker
    node cannot see."""
    project = tmp_path / "hidden" / "project"
    project.mkdir(parents=True)
    text = README.read_text()
    start = text.index("<!-- own-data -->")
    code = text[text.index("```python", start) + len("```python"):text.index("```", text.index("```python", start) + 9)]
    (project / "my_data.py").write_text(code)
    return project


def _cluster(tmp_path: Path, *options: str, commands: list[list[str]]) -> dict:
    """The commands run by a driver on a head + isolated worker cluster (``loopback_cluster.py``)."""
    argv = [a for command in commands for a in ("--", *command)]
    done = subprocess.run([*NAMESPACES, sys.executable, str(HELPER), str(tmp_path), *options, *argv],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for result in report["commands"]:
        assert result["rc"] == 0, result["output"][-3000:]
    return report


def _sweep(tmp_path: Path, *options: str, clbench: list[str]) -> dict:
    run = ["run", *clbench, "--executor", "ray", "--out", str(tmp_path / "hidden" / "out"), "--no-plots"]
    return _cluster(tmp_path, *options, commands=[run])


def _reference(project: Path, out: Path, clbench: list[str]) -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("clbench")), "run", *clbench, "--jobs", "1",
                           "--out", str(out), "--no-plots"], cwd=project, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _runs(out: Path) -> dict[str, bytes]:
    return {str(p.parent.relative_to(out)): p.read_bytes() for p in sorted(out.glob("runs/*/*/*/curves.csv"))}


def _per_node(report: dict) -> dict[str, int]:
    output = report["commands"][0]["output"]
    line = next(x for x in output.splitlines() if x.startswith("runs per Ray node: "))
    return {node.split()[-1]: int(n) for node, n in
            (part.rsplit(": ", 1) for part in line.removeprefix("runs per Ray node: ").split(", "))}


@needs_namespaces
def test_a_sweep_on_an_isolated_worker_node_comes_home_whole(tmp_path):
    """Head without CPUs, so every run is made on the worker node, which cannot see --out: all 8 run
    folders reach the driver's --out, with curves byte-identical to --jobs 1."""
    sweep = ["--scenario", "split-digits", "--strategy", "finetune,er,ewc,gem", "--seeds", "0,1"]
    project = _project(tmp_path)
    report = _sweep(tmp_path, "--head-cpus", "0", clbench=sweep)
    worker = next(n["id"] for n in report["nodes"] if not n["head"])
    assert _per_node(report) == {worker: 8}
    assert {n["ip"] for n in report["nodes"]} == {"127.0.0.1"}
    _reference(project, tmp_path / "reference", sweep)
    made, reference = _runs(tmp_path / "hidden" / "out"), _runs(tmp_path / "reference")
    assert len(made) == 8 and made == reference


@needs_namespaces
def test_a_node_lost_mid_sweep_loses_nothing_and_own_modules_reach_the_worker(tmp_path):
    """The worker node's raylet killed once the first run is home: its runs are made again on the
    head and the sweep completes, curves byte-identical to --jobs 1; the own scenario (a module the
    worker cannot see) is imported there from Ray's runtime environment."""
    sweep = ["--scenario", "my_data:blobs,split-digits", "--strategy", "finetune,er", "--seeds", "0,1"]
    project = _project(tmp_path)
    report = _sweep(tmp_path, "--head-cpus", "2", "--kill-worker-after", "1", clbench=sweep)
    assert report["killed"]
    assert sum(_per_node(report).values()) == 8
    _reference(project, tmp_path / "reference", sweep)
    made, reference = _runs(tmp_path / "hidden" / "out"), _runs(tmp_path / "reference")
    assert len(made) == 8 and made == reference


@needs_namespaces
def test_tuning_on_an_isolated_worker_node_writes_its_trials_on_the_driver(tmp_path):
    """Every trial and evaluation run is made on the worker node (the head has no CPUs), which cannot
    see --out: each trial's run folders, tuning.csv and the evaluation phase are whole on the driver."""
    _project(tmp_path)
    out = tmp_path / "hidden" / "tune"
    tune = ["tune", "--strategy", "er", "--tune-on", "split-digits", "--space", "lr=grid:0.01,0.05", "--search",
            "grid", "--seeds", "0", "--eval-seeds", "1", "--iterations", "20", "--out", str(out), "--no-plots",
            "--quiet"]
    _cluster(tmp_path, "--head-cpus", "0", commands=[tune])
    trials = sorted(out.glob("tuning/runs/split-digits/er/trial-*/seed0/summary.json"))
    assert len(trials) == 2
    assert len(pd.read_csv(out / "tuning.csv")) == 2
    assert (out / "evaluation" / "runs" / "split-digits" / "er" / "seed1" / "summary.json").is_file()
    assert not list(out.glob("tuning/.ray"))  # Tune's bookkeeping is gone, the run folders are the state


def test_own_modules_are_the_user_s_files_not_installed_packages(tmp_path, monkeypatch):
    """What Ray's runtime environment ships: a module or package beside the experiment, never an
    installed package, clbench itself, a built-in name or a module that does not exist."""
    from clbench.common.imports import own_modules

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_data_mod.py").write_text("x = 1\n")
    (tmp_path / "mypkg_mod").mkdir()
    (tmp_path / "mypkg_mod" / "__init__.py").write_text("")
    names = ["my_data_mod:blobs", "mypkg_mod.sub:S", "my_data_mod:other", "finetune", "numpy:ndarray",
             "clbench.strategies:Finetune", "no_such_module_here:x"]
    assert own_modules(names) == [str(tmp_path / "my_data_mod.py"), str(tmp_path / "mypkg_mod")]
