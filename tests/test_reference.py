"""The drift guard: the cheapest committed reference run, rerun now, gives the same summary to the
last digit, so a change that moves a strategy's numbers fails here until ``results/reference`` is
updated on purpose (``results/reference/README.md`` says how)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "default-split-digits"
#: the cheapest reference run that trains a network: finetune on split-digits, seed 0 (about 2 s)
GUARDED = REFERENCE / "runs" / "split-digits" / "finetune" / "seed0"
#: what a rerun may change: how long it took
TIMES = {"wall_seconds", "train_seconds", "eval_seconds", "train_iters_per_second"}
#: MKL and ATen pick their kernels by CPU; pinned to the AVX2 ones (what the reference machine,
#: an AVX2 AMD EPYC, runs unpinned), the float sums are the same on any x86 CPU with AVX2
PINNED = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

RERUN = """
import json, sys
from clbench.common.io import _json_safe
from clbench.run.runner import RunConfig, run
print(json.dumps(_json_safe(run(RunConfig(**json.loads(sys.argv[1]))).summary)))
"""


def _has_avx2() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text()} ".replace("\n", " ")
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="the reference numbers are pinned to x86 AVX2 kernels")
def test_the_cheapest_reference_run_reproduces_exactly():
    want = json.loads((GUARDED / "summary.json").read_text())
    config = json.loads((GUARDED / "config.json").read_text())["run"]
    proc = subprocess.run([sys.executable, "-c", RERUN, json.dumps(config)], capture_output=True, text=True,
                          env={**os.environ, **PINNED}, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    changed = {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
               if k not in TIMES and want.get(k) != got.get(k)}
    assert not changed, f"the reference run {GUARDED.relative_to(REFERENCE.parents[2])} changed: {changed}"
    assert want["acc"] > 0 and want["iterations"] == 440  # a trained run, not an empty one


def test_the_reference_folders_hold_what_their_readme_names():
    readme = (REFERENCE.parent / "README.md").read_text()
    for name in ("default-split-digits", "delange-split-fmnist"):
        folder = REFERENCE.parent / name
        assert (folder / "leaderboard.md").is_file() and (folder / "leaderboard.csv").is_file()
        assert (folder / "parity.md").is_file() and list((folder / "plots").glob("*.png"))
        assert f"clbench run --preset {name}" in readme
        strategies = tomllib.loads((folder / "experiment.toml").read_text())["strategies"]
        assert len(list((folder / "runs").glob("*/*/seed*/summary.json"))) == 5 * len(strategies)
