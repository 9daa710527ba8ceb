"""The fast paths compute what the straightforward code computes: GEM's batched memory gradients,
EWC's batched exact Fisher, the vectorised reservoir; and every strategy is deterministic."""

from __future__ import annotations

import filecmp

import pandas as pd
import pytest
import torch
from torch import nn

from clbench.run.runner import RunConfig, run
from clbench.strategies import create
from clbench.strategies.registry import REGISTRY
from clbench.strategies.replay import _Reservoir


def _gem_with_memory(model, setting: str):
    gem = create("gem", model, n_classes=6, task_classes=[[0, 1], [2, 3], [4, 5]], setting=setting,
                 patterns_per_task=7)
    g = torch.Generator().manual_seed(0)
    for k, n in enumerate((7, 5, 7)):  # task 1 holds fewer samples than its share
        x = torch.randn(n, 1, 4, 4, generator=g)
        y = torch.randint(2 * k, 2 * k + 2, (n,), generator=g)
        gem.memory[k] = (x, y, torch.full((n,), k))
        gem.consolidated.append(k)
    return gem


@pytest.mark.parametrize("setting", ["class-il", "task-il"])
def test_gem_batched_memory_gradients_equal_the_per_task_loop(setting):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 6))
    gem = _gem_with_memory(mlp, setting)
    assert gem._linear_layers() is not None
    batched = gem.memory_gradients([0, 1, 2])
    looped = gem._looped_memory_gradients([0, 1, 2])
    assert batched.shape == (3, sum(p.numel() for p in mlp.parameters()))
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-7)
    assert batched.abs().sum() > 0


@pytest.mark.parametrize("setting", ["class-il", "task-il"])
def test_gem_one_pass_gives_the_batch_gradient_and_the_memory_gradients(setting):
    """The training step's single pass over the batch and the memory: the batch's loss and
    gradient equal a plain backward of the batch alone, the memory rows equal the per-task loop."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 6))
    gem = _gem_with_memory(mlp, setting)
    x, y = torch.randn(9, 1, 4, 4), torch.randint(0, 6, (9,))
    t = y // 2
    loss, g, G = gem._linear_gradients(x, y, t, [0, 1, 2], gem._linear_layers())
    mlp.zero_grad(set_to_none=True)
    plain = gem.batch_loss(gem.logits(x, t), y)
    plain.backward()
    torch.testing.assert_close(loss, plain)
    torch.testing.assert_close(g, gem._flat_grad(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(G, gem._looped_memory_gradients([0, 1, 2]), rtol=1e-5, atol=1e-7)


def test_gem_falls_back_to_the_loop_for_other_layers():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 6))
    gem = _gem_with_memory(cnn, "class-il")
    assert gem._linear_layers() is None
    torch.testing.assert_close(gem.memory_gradients([0, 2]), gem._looped_memory_gradients([0, 2]))


def test_gem_memory_is_each_tasks_most_recent_samples():
    """Batches are kept as they come and trimmed lazily; what a task's memory holds at its end is
    still exactly its last ``patterns_per_task`` samples, in order (mixed batches included)."""
    torch.manual_seed(0)
    gem = create("gem", nn.Sequential(nn.Flatten(), nn.Linear(4, 4)), n_classes=4,
                 task_classes=[[0, 1], [2, 3]], patterns_per_task=7)
    task = [type("T", (), {"id": k, "classes": c})() for k, c in enumerate(([0, 1], [2, 3]))]
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    gem.before_task(task[0])
    for step in range(6):  # 5-sample batches, the last three mixing in task 1
        x = torch.randn(5, 1, 2, 2)
        t = torch.tensor([0, 0, 0, 1, 1]) if step >= 3 else torch.zeros(5, dtype=torch.long)
        y = 2 * t
        gem.observe(x, y, t)
        for k in (0, 1):
            seen[k] += list(x[t == k])
        assert gem.memory_samples() == min(7, len(seen[0])) + min(7, len(seen[1]))
    gem.after_task(task[0])
    torch.testing.assert_close(gem.memory[0][0], torch.stack(seen[0][-7:]))
    assert 1 not in gem.memory  # task 1 has not ended: its samples stay pending
    gem.before_task(task[1])
    gem.observe(torch.randn(5, 1, 2, 2), torch.full((5,), 2), torch.ones(5, dtype=torch.long))
    gem.after_task(task[1])
    assert len(gem.memory[1][0]) == 7 and torch.all(gem.memory[1][2] == 1)


def _reference_reservoir(batches, capacity, seed):
    """Algorithm R exactly as written before vectorising: a Python loop over the kept samples."""
    g = torch.Generator().manual_seed(seed)
    mem, n_seen = [], 0
    for x in batches:
        take = max(0, min(capacity - len(mem), len(x)))
        mem += list(x[:take])
        rest = len(x) - take
        positions = n_seen + take + 1 + torch.arange(rest)
        n_seen += len(x)
        if rest <= 0:
            continue
        slots = (torch.rand(rest, generator=g) * positions).long()
        last = {int(slots[k]): int(k) + take for k in torch.nonzero(slots < capacity).flatten()}
        for dst, src in last.items():
            mem[dst] = x[src]
    return torch.stack(mem)


def test_the_vectorised_reservoir_keeps_what_algorithm_r_keeps():
    batches = [torch.arange(i * 13, (i + 1) * 13, dtype=torch.float32).view(-1, 1) for i in range(40)]
    res, g = _Reservoir(), torch.Generator().manual_seed(5)
    for x in batches:
        res.add(x, x.flatten().long(), torch.zeros(len(x), dtype=torch.long), 20, g)
    assert torch.equal(res.x, _reference_reservoir(batches, 20, 5))


@pytest.mark.parametrize("strategy", sorted(REGISTRY))
def test_every_strategy_gives_byte_identical_curves_for_the_same_seed(tmp_path, strategy):
    cfg = RunConfig(strategy=strategy, seed=2, iterations=6, batch_size=16, eval_every=2, eval_subset=20)
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    assert filecmp.cmp(tmp_path / "a" / "curves.csv", tmp_path / "b" / "curves.csv", shallow=False)
    losses = [pd.read_csv(tmp_path / r / "train.csv")["loss"] for r in "ab"]  # (its seconds column is time)
    pd.testing.assert_series_equal(*losses)


def test_merged_separate_ewc_penalty_equals_the_sum_of_per_task_penalties():
    from clbench.strategies.ewc import EWC

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    ewc = EWC(model, ewc_lambda=3.0)
    pairs = []
    for _ in range(4):
        fisher = {k: torch.rand_like(p) * (torch.rand_like(p) > 0.3) for k, p in model.named_parameters()}
        anchor = {k: p.detach() + torch.randn_like(p) for k, p in model.named_parameters()}
        pairs.append((fisher, anchor))
        ewc._absorb(fisher, anchor)
    named = dict(model.named_parameters())
    straight = 1.5 * sum((f[k] * (named[k] - a[k]).pow(2)).sum() for f, a in pairs for k in f)
    merged = ewc.penalty()
    torch.testing.assert_close(merged, straight, rtol=1e-5, atol=1e-6)
    g_merged = torch.autograd.grad(merged, list(named.values()))
    g_straight = torch.autograd.grad(straight, list(named.values()))
    for a, b in zip(g_merged, g_straight):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # training takes the value and the gradient in closed form, without autograd
    value, pull = ewc._penalty_and_pull()
    torch.testing.assert_close(value, straight.detach(), rtol=1e-5, atol=1e-6)
    assert [p for p, _ in pull] == list(named.values())
    for (_, weighted), b in zip(pull, g_straight):
        torch.testing.assert_close(2 * ewc.factor() * weighted, b, rtol=1e-5, atol=1e-6)


def test_plots_are_drawn_in_parallel_only_where_no_fork_server_has_to_start(monkeypatch):
    """``clbench plot`` (no torch) forks; ``clbench run`` uses the fork server it started; a process
    that imported torch without one draws by itself instead of paying the server's preloads."""
    import sys

    from clbench.sweep import processes

    monkeypatch.setattr(processes, "_server_started", False)
    assert processes.drawing_context() is None  # torch is imported here
    monkeypatch.setattr(processes, "_server_started", True)
    assert processes.drawing_context().get_start_method() == "forkserver"
    monkeypatch.delitem(sys.modules, "torch")
    assert processes.drawing_context().get_start_method() == "fork"
