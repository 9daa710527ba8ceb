"""Fair comparisons: equal memory budgets, cost beside accuracy, view-batch as its authors run it,
augmentation as a shared setting, consolidation once per task, a validation split, honest names."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from clbench import scenarios
from clbench.evaluation.evaluator import Evaluator
from clbench.results.aggregate import leaderboard
from clbench.results.folders import collect
from clbench.results.notes import fairness_notes
from clbench.run.catalog import lookup as strategy_entry
from clbench.run.runner import RunConfig, resolve_for, run
from clbench.scenarios import InputError, split
from clbench.scenarios.data import TensorData, stratified_split
from clbench.scenarios.orderings import make_stream
from clbench.strategies import ER, EWC, GEM, NMC, ViewBatch, augment, build_model, create
from clbench.strategies.backbones import torchvision_normalisation
from clbench.strategies.viewbatch import view_consistency_loss
from clbench.sweep.experiment import DEFAULT_STRATEGIES
from tests.helpers import clbench, synthetic_dataset

FAST = dict(scenario="split-digits", seed=0, epochs=1, eval_every=None)


# ---------------------------------------------------------------- budgets

def test_every_memory_strategy_of_the_default_experiment_holds_the_same_budget():
    sc = scenarios.build("split-digits", seed=0)
    memory_strategies = [s for s in DEFAULT_STRATEGIES if strategy_entry(s).memory_params(200, len(sc.tasks))]
    assert set(memory_strategies) == {"er", "gem", "vb-er"}
    held = {}
    for name in memory_strategies:
        s = run(RunConfig(strategy=name, memory=200, **FAST)).summary
        held[name] = (s["memory_samples"], s["memory_capacity"], s["memory_budget"])
    assert set(held.values()) == {(200, 200, 200)}, held


def test_budget_is_spent_each_strategys_own_way():
    assert strategy_entry("er").memory_params(500, 5) == {"mem_size": 500}
    assert strategy_entry("vb-er").memory_params(500, 5) == {"mem_size": 500}
    assert strategy_entry("gem").memory_params(500, 5) == {"patterns_per_task": 100}
    assert strategy_entry("ewc").memory_params(500, 5) == {}
    assert strategy_entry("avalanche:Replay").memory_params(500, 5) == {"mem_size": 500}
    assert strategy_entry("avalanche:GEM").memory_params(500, 5) == {"patterns_per_exp": 100}
    assert strategy_entry("avalanche:AGEM").memory_params(500, 5) == {"patterns_per_exp": 100}
    assert strategy_entry("avalanche:Naive").memory_params(500, 5) == {}
    with pytest.raises(InputError, match="less than one sample"):
        strategy_entry("gem").memory_params(3, 5)


def test_scenario_default_budget_reaches_the_strategy():
    sc = scenarios.build("split-digits", seed=0)
    run = resolve_for(RunConfig(strategy="gem"), sc)
    model = build_model("mlp", sc.input_shape, sc.n_classes, hidden=[8])
    strat = run.entry.build(model, None, setting=sc.setting, task_classes=sc.task_classes, **run.strategy_params)
    assert strat.patterns_per_task == 200 // 5


def test_an_explicit_memory_parameter_wins_and_the_leaderboard_says_so(tmp_path):
    run(RunConfig(strategy="er", memory=100, **FAST), tmp_path / "runs/split-digits/er/seed0")
    run(RunConfig(strategy="gem", memory=100, params={"patterns_per_task": 60}, **FAST),
        tmp_path / "runs/split-digits/gem/seed0")
    runs = collect([tmp_path])
    gem = runs[runs["strategy"] == "gem"].iloc[0]
    assert gem["budget_overridden"] == ["patterns_per_task"] and gem["memory_capacity"] == 300
    notes = " ".join(fairness_notes(leaderboard(runs)))
    assert "memory budgets differ" in notes and "gem 300" in notes and "er 100" in notes
    assert "sets patterns_per_task itself" in notes


# ---------------------------------------------------------------- cost

def test_flops_are_counted_and_include_each_strategys_extra_passes():
    cfg = dict(scenario="split-digits", seed=0, iterations=12, eval_every=None, memory=200)
    flops = {s: run(RunConfig(strategy=s, **cfg)).summary for s in ("finetune", "er", "gem", "nmc")}
    per_it = {s: v["train_flops"] / v["iterations"] for s, v in flops.items()}
    # MLP 64-400-400-10, batch 32: forward = 2 * 32 * (64*400 + 400*400 + 400*10) FLOPs; a step is about
    # 3 forwards (backward: weight and input gradients, none for the input of the first layer)
    forward = 2 * 32 * (64 * 400 + 400 * 400 + 400 * 10)
    assert 2.5 * forward < per_it["finetune"] < 3.0 * forward
    assert 1.9 < per_it["er"] / per_it["finetune"] < 2.01  # the replay batch doubles each step
    assert per_it["gem"] > 1.2 * per_it["finetune"]  # memory gradients of past tasks
    assert per_it["nmc"] == 0 and flops["nmc"]["trainable_params"] == 0
    assert flops["finetune"]["trainable_params"] == 64 * 400 + 400 + 400 * 400 + 400 + 400 * 10 + 10
    # measured by the runner: float32 images, int64 label and task, beyond what finetune holds (a class mask)
    assert flops["er"]["memory_bytes"] - flops["finetune"]["memory_bytes"] == 200 * (64 * 4 + 8 + 8)


def test_joint_training_keeps_every_sample_met_without_a_copy_and_the_runner_counts_them():
    """Joint training gathers its batches from each task's own tensors (a copy of the union was
    0.9 GB at 20 permuted-fmnist tasks, and twice that while the next one was built) and the
    runner counts those tensors as its memory, as it counted the copy: its samples and its bytes."""
    sc = scenarios.build("split-digits", seed=0)
    joint = create("joint", build_model("mlp", sc.input_shape, 10), n_classes=10)
    for task in sc.tasks[:2]:
        joint.before_task(task)
    assert [x.untyped_storage().data_ptr() for x in joint._xs] == \
        [t.train.x.untyped_storage().data_ptr() for t in sc.tasks[:2]]
    cfg = dict(scenario="split-digits", seed=0, iterations=12, eval_every=None)
    j, f = (run(RunConfig(strategy=s, **cfg)).summary for s in ("joint", "finetune"))
    n = sum(len(t.train) for t in sc.tasks)
    data = sum(t.train.x.untyped_storage().nbytes() + t.train.y.untyped_storage().nbytes() for t in sc.tasks)
    assert j["memory_samples"] == n
    # every task's inputs and labels, the sampling order (int64) and the tasks' starts, beyond finetune's
    assert j["memory_bytes"] - f["memory_bytes"] == data + 8 * n + 8 * (len(sc.tasks) + 1)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_lean_flop_count_equals_torchs_flop_counter(model):
    """``FlopCount`` drops FlopCounterMode's per-module breakdown, not a single FLOP: the same total
    for a training step (forward and backward) and for EWC's Fisher."""
    from torch.utils.flop_counter import FlopCounterMode

    from clbench.evaluation.cost import FlopCount

    sc = scenarios.build("split-digits", seed=0)
    ewc = create("ewc", build_model(model, sc.input_shape, 10, **({"hidden": [32]} if model == "mlp" else {})),
                 n_classes=10)
    x, y = sc.tasks[0].train.batch(torch.arange(200), torch.device("cpu"))
    ewc.before_task(sc.tasks[0])
    totals = []
    for counter in (FlopCounterMode(display=False), FlopCount()):
        with counter:
            ewc.observe(x, y, torch.zeros_like(y))
            ewc.compute_fisher(sc.tasks[0])
        totals.append(counter.get_total_flops() if isinstance(counter, FlopCounterMode) else counter.total)
    assert totals[0] == totals[1] > 0


def test_ewc_reports_its_penalty_memory_and_fisher_flops():
    s = run(RunConfig(strategy="ewc", **FAST)).summary
    f = run(RunConfig(strategy="finetune", **FAST)).summary
    params = f["trainable_params"]
    # the per-task penalties merged into one Fisher-like matrix and one anchor (exactly their sum)
    assert s["memory_samples"] == 0 and s["memory_bytes"] - f["memory_bytes"] == 2 * params * 4
    assert s["train_flops"] > 1.5 * f["train_flops"]  # the Fisher at each task end is counted


# ---------------------------------------------------------------- view-batch as the authors run it

def test_vb_er_memory_holds_raw_training_samples_and_replays_view_groups():
    sc = split(synthetic_dataset(4, per_class=40), 2)
    torch.manual_seed(0)
    inner = ER(build_model("mlp", sc.input_shape, 4, hidden=[16]), mem_size=30, augment="standard")
    vb = ViewBatch(inner, views=4, ssl_warmup_epochs=0)
    stream = make_stream(sc, "sequential", seed=0, batch_size=16, epochs=2, views=4)
    pool = stream.pool.normalize(stream.pool.x)
    seen = []
    vb.before_task(sc.tasks[0])
    for b in stream.batches[:20]:
        vb.observe(stream.pool.normalize(stream.pool.x[b]), stream.pool.y[b], stream.pool_task[b])
        seen.append(b[::4])
    x, y, _ = inner.buffer.tensors()
    assert len(y) == 30
    # every stored sample is exactly a training sample (not an augmented view) with its own label
    dist = torch.cdist(x.flatten(1), pool.flatten(1))
    nearest = dist.argmin(1)
    assert torch.all(dist.min(1).values == 0)
    assert torch.equal(stream.pool.y[nearest], y)
    assert set(nearest.tolist()) <= set(torch.cat(seen).tolist())
    xr, yr, _ = inner._replay(16)
    assert len(yr) == 16 and torch.all(xr.view(4, 4, -1) == xr.view(4, 4, -1)[:, :1])  # groups of 4 views


@pytest.mark.filterwarnings("ignore:reduction")
def test_ssl_loss_is_the_authors_kl_div_mean():
    logits = torch.randn(24, 10)
    views = 3
    g = logits.view(-1, views, 10)
    anchor = F.softmax(g[:, :1], -1).expand(-1, views - 1, -1)
    theirs = F.kl_div(F.log_softmax(g[:, 1:], -1), anchor, reduction="mean")
    assert float(view_consistency_loss(logits, views)) == pytest.approx(float(theirs), rel=1e-5)


def test_ssl_loss_reaches_replayed_groups():
    torch.manual_seed(0)
    inner = ER(build_model("mlp", (1, 8, 8), 4, hidden=[8]), mem_size=8, augment="weak")
    vb = ViewBatch(inner, views=2, ssl_warmup_epochs=0)
    x = torch.randn(8, 1, 8, 8).repeat_interleave(2, 0)
    y = torch.arange(4).repeat_interleave(4)
    vb.observe(x, y, torch.zeros(16, dtype=torch.long))  # fills the memory
    rows = []
    inner.model.register_forward_hook(lambda m, i, o: rows.append(len(o)))
    vb.observe(x, y, torch.zeros(16, dtype=torch.long))
    assert rows[-1] == 32  # current and replayed groups in one forward, all of them under the SSL term


# ---------------------------------------------------------------- augmentation as a shared setting

def test_augment_setting_is_applied_and_recorded(tmp_path):
    x = torch.randn(6, 1, 8, 8)
    none = create("finetune", build_model("mlp", (1, 8, 8), 4), augment="none")
    weak = create("finetune", build_model("mlp", (1, 8, 8), 4), augment="weak")
    assert torch.equal(none.augment_inputs(x), x)
    assert not torch.equal(weak.augment_inputs(x), x)
    with pytest.raises(InputError, match="augment='heavy'"):
        create("er", build_model("mlp", (1, 8, 8), 4), augment="heavy")
    run(RunConfig(strategy="vb-er", augment="weak", **FAST), tmp_path / "r")
    conf = json.loads((tmp_path / "r/config.json").read_text())
    assert conf["run"]["augment"] == "weak" and conf["strategy"]["augment"] == "weak"
    assert conf["strategy"]["anchor_augment"] == "weak"


def test_view_anchors_get_weak_and_the_other_views_the_family():
    x = torch.randn(4, 1, 8, 8).repeat_interleave(3, 0)
    g = torch.Generator().manual_seed(0)
    twin = torch.Generator().set_state(g.get_state())
    out = augment.apply_views(x, "standard", 3, g)
    assert torch.allclose(out[::3], augment.weak(x[::3], twin, False))
    assert torch.equal(augment.apply_views(x, "none", 3, g), x)


# ---------------------------------------------------------------- consolidation once per task

def _recurring(setting="class-il"):
    sc = split(synthetic_dataset(6, per_class=20), 3, setting=setting)
    return sc, make_stream(sc, "recurring", seed=0, batch_size=10, epochs=2, budget=1.0)


def _train(strategy, sc, stream, before_step=lambda: None):
    """The runner's loop in miniature: every segment's boundary hooks, ``before_step`` before each update."""
    tasks = stream.tasks or sc.tasks
    strategy.before_stream(sc)
    for seg in stream.segments:
        strategy.before_task(tasks[seg.task])
        for it in range(seg.start, seg.stop):
            b = stream.batches[it]
            before_step()
            strategy.observe(stream.pool.normalize(stream.pool.x[b]), stream.pool.y[b], stream.pool_task[b])
        strategy.after_task(tasks[seg.task])


def test_ewc_on_a_recurring_stream_holds_one_penalty_per_task():
    sc, stream = _recurring()
    assert len(stream.segments) > len(sc.tasks)  # tasks come back
    torch.manual_seed(0)
    ewc = EWC(build_model("mlp", sc.input_shape, 6, hidden=[8]), setting=sc.setting, n_classes=6)
    _train(ewc, sc, stream)
    assert ewc.penalised == [0, 1, 2] and ewc.consolidated == [0, 1, 2]


def test_er_task_end_inserts_each_task_once_on_a_recurring_stream():
    sc, stream = _recurring()
    torch.manual_seed(0)
    er = ER(build_model("mlp", sc.input_shape, 6, hidden=[8]), mem_size=1000, update="task_end", n_classes=6)
    _train(er, sc, stream)
    x, y, t = er.buffer.tensors()
    assert len(y) == sum(len(task.train) for task in sc.tasks)  # each task's data once, no duplicates
    assert len(torch.unique(x.flatten(1), dim=0)) == len(y)


def test_gem_files_every_sample_under_its_own_task_in_a_fuzzy_stream():
    sc = split(synthetic_dataset(6, per_class=20), 3)
    stream = make_stream(sc, "fuzzy", seed=0, batch_size=10, epochs=3, width=6)
    torch.manual_seed(0)
    gem = GEM(build_model("mlp", sc.input_shape, 6, hidden=[8]), patterns_per_task=15, n_classes=6)
    constrained = []
    _train(gem, sc, stream, lambda: constrained.append(
        sorted(k for k in gem.memory if k in gem.consolidated and k != gem.current_task)))
    for k, (_, y, t) in gem.memory.items():
        assert torch.all(t == k) and set(y.tolist()) <= set(sc.tasks[k].classes)
    # only tasks that have ended constrain the update, never the incoming one
    assert constrained[stream.segments[1].start - 1] == [] and constrained[-1] == [0, 1]


# ---------------------------------------------------------------- validation split

def test_validation_split_is_disjoint_stratified_and_seeded():
    data = scenarios.load_dataset("digits")
    train, test, _ = data
    rest, val = stratified_split(train, 0.1, torch.Generator().manual_seed(0))
    assert len(rest) + len(val) == len(train)
    for c in range(10):
        n_c = int((train.y == c).sum())
        assert int((val.y == c).sum()) == round(0.1 * n_c)

    def keys(d: TensorData) -> set:
        return {bytes(r) for r in d.x.flatten(1).numpy()}

    assert not keys(rest) & keys(val) and not keys(val) & keys(test)
    sc = scenarios.build("split-digits", seed=3)
    for task in sc.tasks:
        assert set(task.val.y.tolist()) == set(task.classes)
        assert not keys(task.val) & keys(task.train)
    again = scenarios.build("split-digits", seed=3)
    assert all(torch.equal(a.val.x, b.val.x) for a, b in zip(sc.tasks, again.tasks))
    assert scenarios.build("split-digits", seed=3, val_fraction=0.0).tasks[0].val is None
    assert sum(len(t.train) for t in scenarios.build("split-digits", seed=3, val_fraction=0.0).tasks) == len(train)


def test_evaluation_on_val_measures_the_validation_data(tmp_path):
    sc = scenarios.build("split-digits", seed=0)
    ev = Evaluator(sc, subset=None, split="val")
    assert ev.offsets[-1] == sum(len(t.val) for t in sc.tasks)
    run(RunConfig(strategy="nmc", eval_on="val", **FAST), tmp_path / "r")
    conf = json.loads((tmp_path / "r/config.json").read_text())
    assert conf["evaluation"]["on"] == "val"
    assert conf["evaluation"]["samples_per_task"] == [len(t.val) for t in sc.tasks]


def test_eval_on_val_without_a_validation_split_is_refused(tmp_path):
    r = clbench("run", "--strategy", "nmc", "--eval-on", "val", "--val-fraction", "0", "--out", str(tmp_path / "x"),
                "--quiet")
    assert r.returncode == 2 and "validation split" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- NMC named for what it is

def test_nmc_row_names_its_backbone(tmp_path):
    run(RunConfig(strategy="nmc", **FAST), tmp_path / "runs/split-digits/nmc/seed0")
    lb = leaderboard(collect([tmp_path]))
    assert lb.loc[0, "label"] == "nmc[pixels]"


def test_pretrained_backbones_use_their_weights_normalisation():
    assert torchvision_normalisation("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    sc = scenarios.build("split-digits", seed=0)
    x, _ = sc.tasks[0].train.batch(torch.arange(5))
    raw = x * sc.tasks[0].train.std[0] + sc.tasks[0].train.mean[0]
    nmc = NMC(n_classes=10, inputs="raw")
    nmc.before_stream(sc)
    assert torch.allclose(nmc.embed(x), F.normalize(raw.flatten(1), dim=1), atol=1e-6)
    nmc.model.weights_norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    nmc.inputs = "weights"
    want = F.normalize(((raw.expand(-1, 3, -1, -1) - 0.5) / 0.25).flatten(1), dim=1)
    assert torch.allclose(nmc.embed(x), want, atol=1e-6)
    with pytest.raises(InputError, match="no pretrained weights"):
        NMC(inputs="weights")


# ---------------------------------------------------------------- the default leaderboard

def test_default_experiment_leaderboard_has_equal_budgets_and_cost_columns(tmp_path):
    r = clbench("run", "--seeds", "0", "--epochs", "1", "--eval-every", "20", "--out", str(tmp_path), "--quiet",
                "--no-plots")
    assert r.returncode == 0, r.stderr
    lb = pd.read_csv(tmp_path / "leaderboard.csv").set_index("strategy")
    mem = lb[lb["uses_memory"]]
    assert sorted(mem.index) == ["er", "gem", "vb-er"]
    assert set(mem["memory_samples_mean"]) == {200} and set(mem["memory_capacity_mean"]) == {200}
    trained = lb.drop(index="nmc")
    assert (trained["train_flops_mean"] > 0).all() and (trained["trainable_params_mean"] > 0).all()
    assert lb.loc["nmc", "label"] == "nmc[pixels]"
    md = (tmp_path / "leaderboard.md").read_text()
    assert "train GFLOP" in md and "memory (samples)" in md and "same budget of 200 samples" in md


def test_view_batch_with_one_view_is_exactly_its_inner_strategy():
    """The wrapper adds nothing but views: with views=1 it must give the wrapped strategy's curves."""
    er = run(RunConfig(strategy="er", augment="weak", **FAST)).log
    vb = run(RunConfig(strategy="vb-er", augment="weak", params={"views": 1}, **FAST)).log
    pd.testing.assert_frame_equal(er, vb)


def test_the_runner_measures_memory_a_strategy_does_not_report():
    """A user's strategy that keeps a teacher copy (and reports nothing) holds the copy's bytes; a
    strategy that holds nothing reads 0, not "unknown"."""
    cfg = dict(scenario="split-digits", seed=0, iterations=6, eval_every=None)
    teacher = run(RunConfig(strategy="tests.faulty:KeepsTeacher", **cfg)).summary
    plain = run(RunConfig(strategy="finetune", **cfg)).summary
    params = plain["trainable_params"]
    assert teacher["memory_bytes"] - plain["memory_bytes"] == params * 4  # float32 weights of the copy
    assert teacher["memory_samples"] == 0 and plain["memory_bytes"] < 1000  # finetune: a class mask
