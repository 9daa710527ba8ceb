"""Real Fashion-MNIST from Debian's dataset-fashion-mnist (installed by .ci/run)."""

import pytest

from clbench import scenarios
from clbench.run.runner import RunConfig, run
from clbench.scenarios.sources import DATASETS

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATASETS["fashion-mnist"].available(),
                                                   reason="apt-get install dataset-fashion-mnist")]


def test_split_fmnist_matches_the_literature_layout():
    sc = scenarios.build("split-fmnist", seed=0)
    assert len(sc.tasks) == 5 and sc.tasks[0].classes == [0, 1]
    assert len(sc.tasks[0].train) == 10800 and len(sc.tasks[0].val) == 1200
    assert len(sc.tasks[0].test) == 2000 and sc.input_shape == (1, 28, 28)


def test_er_learns_split_fmnist_above_chance():
    res = run(RunConfig(scenario="split-fmnist", strategy="er", seed=0, iterations=60, eval_every=20,
                        eval_subset=500))
    R = res.log[res.log.eval_step == res.log.eval_step.max()]
    assert res.summary["acc"] > 0.3  # chance is 0.1 over 10 classes
    assert R.accuracy.iloc[-1] > 0.8  # the last task (bag vs ankle boot) is learned
