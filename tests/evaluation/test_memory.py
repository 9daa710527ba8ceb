"""Resident memory stays flat over many evaluations (issue #25): the evaluator keeps no small tensor
per evaluation among the large buffers its forwards allocate and free (``clbench.evaluation.rowlog``).
A bound on growth, not a timing."""

from __future__ import annotations

import statistics
import sys

import pytest
import torch

from clbench.evaluation.evaluator import Evaluator
from clbench.scenarios.builders import permuted
from clbench.strategies.base import Finetune
from clbench.strategies.models import MLP
from tests.helpers import synthetic_dataset

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")]


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


EVALUATIONS, WINDOW = 210, 30


def growth_over_evaluations() -> tuple[float, int]:
    """Resident growth (MB) of a run in this process from evaluations 31-60 to the last 30 of 210
    (medians: within one run the figure moves by some 90 MB as the forwards' buffers are kept or
    returned), and the log's rows. One thread, as a run's default."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sc = permuted(synthetic_dataset(n_classes=10, per_class=10, side=28, test_per_class=100), n_tasks=5)
    model = MLP(sc.input_shape, sc.n_classes, hidden=[1000, 1000])
    strategy = Finetune(model, torch.optim.SGD(model.parameters(), lr=0.01), setting=sc.setting)
    evaluator = Evaluator(sc, subset=1000)
    x, y = sc.tasks[0].train.normalize(sc.tasks[0].train.x[:64]), sc.tasks[0].train.y[:64]
    resident = []
    for n in range(1, EVALUATIONS + 1):
        strategy.observe(x, y)
        evaluator.evaluate(strategy, 2 + n % 4, n, 0)  # forwards of four sizes, as tasks are added
        resident.append(resident_mb())
    early, late = resident[WINDOW:2 * WINDOW], resident[-WINDOW:]
    return statistics.median(late) - statistics.median(early), len(evaluator.log_rows())


MEASURE = "from tests.evaluation.test_memory import growth_over_evaluations as g; print(*g())"


def test_resident_memory_stops_growing_over_many_evaluations():
    """Measured in a fresh process: in a test worker the heap left by earlier tests moves the figure
    by tens of MB either way."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True, timeout=300)
    grown, rows = done.stdout.split()
    # 150 evaluations apart, of up to 5,000 samples through 1000-unit layers (20 MB activations):
    # -6 to +8 MB here; with the evaluator keeping each evaluation's count tensors, 69 MB over 60
    # evaluations (above 1 MB an evaluation)
    apart = EVALUATIONS - 2 * WINDOW
    assert float(grown) < 40, f"resident memory grew by {float(grown):.0f} MB over {apart} evaluations"
    assert int(rows) == sum(2 + n % 4 for n in range(1, EVALUATIONS + 1))
