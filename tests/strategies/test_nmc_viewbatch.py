import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clbench.evaluation.evaluator import Evaluator
from clbench.run.runner import RunConfig, run
from clbench.scenarios import InputError, split
from clbench.scenarios.stream import epoch_batches, sequential
from clbench.strategies import ER, NMC, ViewBatch, build_model
from clbench.strategies.viewbatch import view_consistency_loss
from tests.helpers import RunsAShellCommand, synthetic_dataset

# ---------------------------------------------------------------- NMC

def test_nmc_pixels_on_split_digits():
    res = run(RunConfig(scenario="split-digits", strategy="nmc", seed=0, eval_every=1))
    s = res.summary
    assert s["acc"] >= 0.85
    assert abs(s["min_acc"] - s["acc"]) < 0.05  # no gradient-driven collapse


def test_nmc_running_means_equal_batch_means():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 1, 4, 4, generator=g)
    y = torch.arange(3).repeat(20)
    nmc = NMC(n_classes=3)
    for s in range(0, 60, 7):  # uneven batches, classes mixed
        nmc.observe(x[s:s + 7], y[s:s + 7])
    feats = F.normalize(x.flatten(1), dim=1)
    expected = torch.stack([feats[y == c].mean(0) for c in range(3)])
    assert torch.allclose(nmc.means(), expected, atol=1e-6)
    # prediction = nearest mean among the classes seen so far
    logits = nmc.predict(x)
    d = torch.cdist(feats, expected)
    assert torch.equal(logits.argmax(1), d.argmin(1))


def test_nmc_ignores_unseen_classes_and_cosine_flag():
    nmc = NMC(n_classes=4, cosine=True)
    x = torch.randn(4, 1, 2, 2)
    nmc.observe(x[:2], torch.tensor([0, 1]))
    assert set(nmc.predict(x).argmax(1).tolist()) <= {0, 1}
    assert torch.allclose(nmc.means()[:2].norm(dim=1), torch.ones(2))


def test_nmc_evaluation_embeds_once_and_then_only_compares_means():
    # the backbone is frozen, so the evaluator embeds its samples once; later evaluations never call it
    sc = split(synthetic_dataset(4), 2)
    nmc = NMC(n_classes=4)
    calls = []
    nmc.model.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    x, y = sc.tasks[0].train.batch()
    nmc.observe(x, y)
    calls.clear()
    ev = Evaluator(sc, subset=None)
    first = ev.evaluate(nmc, 2, 0, 0)
    assert sum(calls) == ev.offsets[-1]  # every evaluation sample embedded once
    for n in range(1, 4):
        last = ev.evaluate(nmc, 2, n, 0)
    assert sum(calls) == ev.offsets[-1]
    assert torch.equal(first.correct, last.correct)


def test_nmc_on_a_checkpoint_backbone(tmp_path):
    torch.manual_seed(0)
    net = build_model("mlp", (1, 8, 8), 10, hidden=[32])
    path = tmp_path / "backbone.pt"
    torch.save({"arch": "mlp", "input_shape": (1, 8, 8), "n_out": 10, "options": {"hidden": [32]},
                "state_dict": net.state_dict()}, path)
    res = run(RunConfig(scenario="split-digits", strategy="nmc", params={"backbone": f"checkpoint:{path}"},
                        eval_every=None))
    assert res.summary["acc"] > 0.5  # random 32-d ReLU features still separate digits well above chance (0.1)
    module_path = tmp_path / "module.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 16)), module_path)
    nmc = NMC(backbone=f"trusted-checkpoint:{module_path}", n_classes=10)
    assert nmc.embed(torch.randn(3, 1, 8, 8)).shape == (3, 16)


def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"arch": "mlp", "state_dict": RunsAShellCommand(marker)}, path)
    with pytest.raises(InputError, match="holds more than weights.*trusted-checkpoint:"):
        NMC(backbone=f"checkpoint:{path}")
    assert not marker.exists()
    module_path = tmp_path / "module.pt"  # a whole module is a pickle too: only when trusted
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 16)), module_path)
    with pytest.raises(InputError, match="holds more than weights"):
        NMC(backbone=f"checkpoint:{module_path}")


def test_bad_backbones_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        NMC(backbone=f"checkpoint:{tmp_path / 'missing.pt'}")
    with pytest.raises(InputError, match="unknown backbone"):
        NMC(backbone="resnet")
    with pytest.raises(InputError, match="torchvision has no model"):
        NMC(backbone="torchvision:not_a_model")


# ---------------------------------------------------------------- view-batch sampler

@pytest.mark.parametrize("n,batch,views", [(50, 8, 4), (64, 16, 2), (37, 12, 3)])
def test_view_batch_sampler(n, batch, views):
    per_epoch = -(-n // batch)
    g = torch.Generator().manual_seed(0)
    batches = epoch_batches(n, batch, per_epoch * views * 2, g, views)
    plain = epoch_batches(n, batch, per_epoch, torch.Generator().manual_seed(0), 1)
    assert len(plain) == per_epoch  # iterations per epoch unchanged by views
    for b in batches:
        assert len(b) <= batch and len(b) % views == 0
        groups = b.view(-1, views)
        assert (groups == groups[:, :1]).all()  # every group of `views` items is one sample
    # one pass over the data takes `views` epochs: the first n * views items hold every sample
    # exactly once, as one group of `views` copies, and they fit in `views` epochs of batches
    assert sum(len(b) for b in batches[:per_epoch * views]) >= n * views
    first = torch.cat(batches)[:n * views]
    assert torch.equal(torch.bincount(first, minlength=n), torch.full((n,), views))
    again = epoch_batches(n, batch, per_epoch * views * 2, torch.Generator().manual_seed(0), views)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_batch_not_divisible_by_views_is_an_error():
    with pytest.raises(InputError, match="not divisible by views"):
        epoch_batches(10, 6, 3, torch.Generator(), 4)


def test_stream_uses_the_strategy_views():
    sc = split(synthetic_dataset(4), 2)
    s = sequential(sc, batch_size=8, seed=0, epochs=4, views=4)
    assert len(s) == 2 * 4 * -(-60 // 8)
    assert all((b.view(-1, 4) == b.view(-1, 4)[:, :1]).all() for b in s.batches)


# ---------------------------------------------------------------- view-batch self-supervision

def test_ssl_loss_zero_for_identical_views_positive_otherwise():
    anchor = torch.randn(5, 1, 7)
    same = anchor.repeat(1, 4, 1).view(20, 7)
    assert float(view_consistency_loss(same, 4)) == pytest.approx(0.0, abs=1e-7)
    different = same + 0.5 * torch.randn(20, 7)
    assert float(view_consistency_loss(different, 4)) > 0


def test_ssl_loss_sends_no_gradient_into_the_anchor():
    logits = torch.randn(12, 5, requires_grad=True)
    view_consistency_loss(logits, 3).backward()
    grad = logits.grad.view(4, 3, 5)
    assert torch.all(grad[:, 0] == 0) and grad[:, 1:].abs().sum() > 0


def test_ssl_loss_ignores_masked_classes():
    logits = torch.randn(8, 4)
    logits[:, 2:] = float("-inf")
    assert torch.isfinite(view_consistency_loss(logits, 4))


def test_view_batch_wraps_er_and_keeps_its_buffer():
    torch.manual_seed(0)
    inner = ER(build_model("mlp", (1, 8, 8), 4, hidden=[16]), mem_size=10)
    vb = ViewBatch(inner, views=2, ssl_warmup_epochs=0)
    x = torch.randn(8, 1, 8, 8).repeat_interleave(2, 0)
    y = torch.arange(4).repeat_interleave(4)
    loss = vb.observe(x, y, torch.zeros(16, dtype=torch.long))
    # the memory keeps one raw sample per view group: 8 distinct samples, not 16 copies
    assert torch.isfinite(loss) and len(inner.buffer) == 8
    assert torch.equal(inner.buffer.tensors()[0].sort(0).values, x[::2].sort(0).values)
    assert vb.model is inner.model and vb.config()["views"] == 2
    with pytest.raises(InputError, match="groups of views"):
        vb.observe(x[:3], y[:3])


def test_vb_er_runs_end_to_end():
    res = run(RunConfig(scenario="split-digits", strategy="vb-er", seed=0, eval_every=None,
                        params={"ssl_warmup_epochs": 1}))
    assert res.summary["acc"] > 0.5


def test_the_self_supervised_warm_up_scales_with_the_task_and_says_when_it_never_acted(tmp_path):
    """The authors switch the term on after 5 of 50 epochs (a tenth of each task): by default a tenth
    of each task's updates here, so it acts at any task length; 5 whole epochs on 2-epoch tasks
    leave it off, and the run and the leaderboard say so."""
    from clbench.results.leaderboard import write_leaderboard
    from clbench.sweep.experiment import Experiment, run_experiment

    short = dict(scenario="split-digits", seed=0, eval_every=None, iterations=20)
    tenth = run(RunConfig(strategy="vb-er", **short)).summary
    assert tenth["ssl_updates"] == 5 * (20 - 2)  # every update of each task after its first 2
    run_experiment(Experiment(strategies=["vb-er"], seeds=[0], iterations=20, eval_every=None,
                              params={"vb-er": {"ssl_warmup_epochs": 5}}), tmp_path, show_progress=False)
    lb = write_leaderboard([tmp_path], tmp_path)
    assert lb["n_ssl_silent"].tolist() == [1]
    assert "self-supervised term never acted in 1 of 1 run(s)" in (tmp_path / "leaderboard.md").read_text()
