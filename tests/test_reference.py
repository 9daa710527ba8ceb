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


def _like_the_reference_cpu() -> bool:
    """x86 with AVX2 and neither AVX-512 nor AMX, as the reference machine: pinned to the AVX2 kernels,
    its float sums are the reference's. On a CPU with AVX-512 or AMX they are not, even pinned (MKL
    and oneDNN still pick other kernels for some shapes), and an accuracy moves by a test sample."""
    if not _has_avx2():
        return False
    flags = f" {Path('/proc/cpuinfo').read_text()} ".replace("\n", " ")
    return " avx512f " not in flags and " amx_tile " not in flags


def _rerun() -> tuple[dict, dict]:
    want = json.loads((GUARDED / "summary.json").read_text())
    config = json.loads((GUARDED / "config.json").read_text())["run"]
    proc = subprocess.run([sys.executable, "-c", RERUN, json.dumps(config)], capture_output=True, text=True,
                          env={**os.environ, **PINNED}, check=True)
    return want, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _like_the_reference_cpu(),
                    reason="bit-exact only on the reference machine's kind of CPU (AVX2, no AVX-512 or AMX); "
                           "test_the_cheapest_reference_run_reproduces_within_a_test_sample checks the rest")
def test_the_cheapest_reference_run_reproduces_exactly():
    want, got = _rerun()
    changed = {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
               if k not in TIMES and want.get(k) != got.get(k)}
    assert not changed, f"the reference run {GUARDED.relative_to(REFERENCE.parents[2])} changed: {changed}"
    assert want["acc"] > 0 and want["iterations"] == 440  # a trained run, not an empty one


#: how far a metric of the guarded run may move on another CPU's float sums: accuracies by a couple
#: of the 72 or so test samples of a task (0.014 each), counts of iterations by a few
NEAR = {"fraction": 0.03, "iterations": 3.0}


def test_the_cheapest_reference_run_reproduces_within_a_test_sample():
    """On any CPU: what the run did (its length, its cost, its settings) exactly, and every accuracy
    metric within a couple of test samples: a change of method moves them by far more."""
    want, got = _rerun()
    assert set(got) - TIMES == set(want) - TIMES
    for k in sorted(set(want) - TIMES):
        a, b = want[k], got[k]
        if isinstance(a, float) and isinstance(b, float) and k not in ("train_flops", "memory_bytes"):
            limit = NEAR["iterations"] if "iters" in k else NEAR["fraction"]
            assert abs(a - b) <= limit, f"{k}: reference {a}, now {b}"
        else:
            assert a == b, f"{k}: reference {a!r}, now {b!r}"


def test_the_reference_folders_hold_what_their_readme_names():
    readme = (REFERENCE.parent / "README.md").read_text()
    for name in ("default-split-digits", "delange-split-fmnist"):
        folder = REFERENCE.parent / name
        assert (folder / "leaderboard.md").is_file() and (folder / "leaderboard.csv").is_file()
        assert (folder / "parity.md").is_file() and list((folder / "plots").glob("*.png"))
        assert f"clbench run --preset {name}" in readme
        strategies = tomllib.loads((folder / "experiment.toml").read_text())["strategies"]
        assert len(list((folder / "runs").glob("*/*/seed*/summary.json"))) == 5 * len(strategies)
