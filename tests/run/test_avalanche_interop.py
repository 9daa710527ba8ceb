"""Avalanche interop: the benchmark conversion, Avalanche strategies in the clbench runner, and
clbench's evaluator as a plugin inside an Avalanche loop."""

import json
import warnings

import pytest
import torch

from clbench import scenarios
from clbench.evaluation.evaluator import Evaluator
from clbench.interop.avalanche import ContinualEvaluationPlugin, _ModelView, make_strategy, to_avalanche
from clbench.run.catalog import lookup
from clbench.run.runner import RunConfig, run
from clbench.scenarios import InputError
from clbench.strategies import build_model

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def sc():
    return scenarios.build("split-digits", seed=0, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])


def test_to_avalanche_keeps_tasks_class_order_and_test_sets(sc):
    bm = to_avalanche(sc)
    assert len(bm.train_stream) == len(bm.test_stream) == 5
    for exp, task in zip(bm.test_stream, sc.tasks):
        assert sorted(set(exp.dataset.targets)) == sorted(task.classes)
        x, y, t = exp.dataset[3]
        ref_x, ref_y = task.test.batch(torch.tensor([3]))
        assert torch.equal(x, ref_x[0]) and int(y) == int(ref_y[0]) and int(t) == 0
    assert sorted(set(bm.train_stream[0].dataset.targets)) == [8, 9]
    til = to_avalanche(scenarios.build("split-digits", setting="task-il"))
    assert til.test_stream[3].dataset[0][2] == 3


def test_avalanche_strategy_through_the_clbench_runner(tmp_path):
    res = run(RunConfig(scenario="split-digits", strategy="avalanche:EWC", params={"ewc_lambda": "10"}, eval_every=5,
                        eval_schedule="periodic", epochs=1), tmp_path / "r")
    s = res.summary
    assert s["iterations"] == 44 and s["n_evaluations"] == 1 + 44 // 5 + 5  # start, every 5th, 5 task ends
    assert 0.1 < s["acc"] < 0.5 and s["bwt"] < -0.3  # EWC in class-IL forgets, like finetune
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["strategy"]["library"] == "avalanche-lib 0.6.0" and cfg["strategy"]["ewc_lambda"] == 10


def test_avalanche_names_and_parameters_are_checked():
    with pytest.raises(InputError, match="unknown Avalanche strategy 'Nope'"):
        lookup("avalanche:Nope").coerce({})
    with pytest.raises(InputError, match="has no parameter 'lambda'"):
        lookup("avalanche:EWC").coerce({"lambda": "1"})
    assert lookup("avalanche:Replay").coerce({"mem_size": "50"}) == {"mem_size": 50}
    with pytest.raises(InputError, match="whole epochs"):
        run(RunConfig(scenario="split-digits", strategy="avalanche:Naive", iterations=10))


def test_plugin_log_equals_clbench_evaluator_on_the_same_model_state(sc):
    torch.manual_seed(0)
    model = build_model("mlp", sc.input_shape, sc.n_classes, hidden=[64])
    plugin = ContinualEvaluationPlugin.create(sc, eval_every=3, eval_subset=40, seed=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    strategy = make_strategy("Naive", model, opt, batch_size=32, epochs=1, device="cpu", plugins=[plugin], params={})

    def forbidden(*a, **k):
        raise AssertionError("the plugin must not call strategy.eval()")

    strategy.eval = forbidden
    bm = to_avalanche(sc)
    for exp in bm.train_stream[:2]:
        strategy.train(exp, num_workers=0)
    log = plugin.log()
    assert log.eval_step.max() + 1 == plugin.evaluator.n_steps()
    n0, n1 = (-(-len(t.train) // 32) for t in sc.tasks[:2])  # iterations of one epoch of each task
    assert plugin.iteration == n0 + n1 and set(log.iteration) >= {0, 3, n0, n0 + n1}
    last = log[log.eval_step == log.eval_step.max()].accuracy.tolist()
    ref = Evaluator(sc, subset=40, seed=7)
    view = _ModelView(model, sc.setting, sc.task_classes, sc.n_classes)
    e = ref.evaluate(view, 5, 18, 1)
    assert last == pytest.approx((e.correct.float() / e.counts.float()).tolist())
    assert model.training  # the evaluation restored train mode
    s = plugin.summary()
    assert 0 <= s["acc"] <= 1 and s["min_acc"] <= s["acc"]


def test_every_listed_strategy_builds():
    from clbench.interop.avalanche import STRATEGIES, strategy_params

    model = build_model("mlp", (1, 8, 8), 10, hidden=[8])
    need = {"Replay": {"mem_size": 10}, "GEM": {"patterns_per_exp": 5, "memory_strength": 0.5},
            "EWC": {"ewc_lambda": 1.0}, "LwF": {"alpha": 1.0, "temperature": 2.0},
            "SynapticIntelligence": {"si_lambda": 1.0}, "AGEM": {"patterns_per_exp": 5},
            "GDumb": {"mem_size": 10}, "ER_ACE": {}, "DER": {}, "Naive": {}}
    for name in STRATEGIES:
        assert isinstance(strategy_params(name), dict)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = make_strategy(name, model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=8, epochs=1,
                              device="cpu", plugins=[], params=need[name])
        assert s.train_mb_size == 8


class _PathIntegral:
    """What Synaptic Intelligence's path integral is, computed in the plainest way beside the plugin:
    after each update, the sum over updates of grad * (new weights - old weights)."""

    def __init__(self, model):
        self.model, self.total = model, {n: torch.zeros(p.numel()) for n, p in model.named_parameters()}

    def before_training_iteration(self, strategy, **kwargs):
        self.old = {n: p.detach().flatten().clone() for n, p in self.model.named_parameters()}

    def after_training_iteration(self, strategy, **kwargs):
        for n, p in self.model.named_parameters():
            self.total[n] += p.grad.detach().flatten() * (p.detach().flatten() - self.old[n])


def test_synaptic_intelligence_integrates_the_path_on_the_cpu(sc):
    """Avalanche 0.6's SI aliases the live weights on the CPU (its path integral is 0: SI == Naive);
    clbench patches the plugin to store copies."""
    from avalanche.core import SupervisedPlugin

    torch.manual_seed(0)
    model = build_model("mlp", sc.input_shape, sc.n_classes, hidden=[16])
    probe = type("Probe", (_PathIntegral, SupervisedPlugin), {})(model)
    SupervisedPlugin.__init__(probe)
    strategy = make_strategy("SynapticIntelligence", model, torch.optim.SGD(model.parameters(), lr=0.05),
                             batch_size=32, epochs=1, device="cpu", plugins=[probe], params={"si_lambda": 1.0})
    si = next(p for p in strategy.plugins if type(p).__name__ == "SynapticIntelligencePlugin")
    strategy.train(to_avalanche(sc).train_stream[0], num_workers=0)
    for name, total in probe.total.items():
        assert torch.allclose(si.syn_data["trajectory"][name].data, total, rtol=1e-4, atol=1e-9), name
    assert sum(float(t.abs().sum()) for t in probe.total.values()) > 0


def test_synaptic_intelligence_is_not_naive_and_every_memory_is_measured(tmp_path):
    common = dict(scenario="split-digits", epochs=1, eval_every=10, eval_schedule="periodic", memory=100)
    runs = {s: run(RunConfig(strategy=s, **common, params=p), tmp_path / s.replace(":", "_")).summary
            for s, p in [("avalanche:Naive", {}), ("avalanche:SynapticIntelligence", {"si_lambda": 1.0}),
                         ("avalanche:AGEM", {}), ("avalanche:Replay", {})]}
    naive, si = runs["avalanche:Naive"], runs["avalanche:SynapticIntelligence"]
    assert si["acc"] != naive["acc"] or si["bwt"] != naive["bwt"]
    params = naive["trainable_params"]
    assert naive["memory_samples"] == 0 and naive["memory_bytes"] == 0
    # SI keeps 2 per-parameter tensors of its penalty and 5 of its path integral (7 x params floats)
    assert si["memory_samples"] == 0 and si["memory_bytes"] == 7 * params * 4
    # AGEM: 20 samples per experience (the budget's 100 // 5) and its reference gradient
    assert runs["avalanche:AGEM"]["memory_samples"] == 100
    assert runs["avalanche:AGEM"]["memory_bytes"] >= params * 4 + 100 * 64 * 4
    replay = runs["avalanche:Replay"]
    assert replay["memory_samples"] == 100 and replay["memory_bytes"] >= 100 * (64 * 4 + 8)


def test_a_strategy_that_needs_parameters_says_which_before_it_starts():
    with pytest.raises(InputError, match=r"avalanche:LwF needs alpha, temperature: add "
                                         r"--param avalanche:LwF.alpha=VALUE --param avalanche:LwF.temperature=VALUE"):
        run(RunConfig(scenario="split-digits", strategy="avalanche:LwF", epochs=1))
