"""Estimators of the diagonal Fisher information for EWC, each a function of the strategy (its
model, its masked logits) and the task's data.

Variants (van de Ven, "On the computation of the Fisher information in continual learning", ICLR
2025 blog post): EXACT = E_x sum_y p(y|x) (d log p(y|x))^2, SAMPLE = one y drawn from p(y|x),
EMPIRICAL = the true y, BATCHED(b) = squared gradient of a minibatch-mean loss averaged over
minibatches. MLPs take the exact per-sample route through ``linear_layers`` (no per-sample
gradient is materialised); other models use torch.func's vmap.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from clbench.strategies.linear_layers import linear_layers, recorded_io

FisherVariant = Literal["exact", "sample", "empirical", "batched"]
FISHER_VARIANTS: tuple[str, ...] = get_args(FisherVariant)
#: samples per pass of the MLP Fisher: large, because the run's FLOP counter costs a fixed time
#: per operation (at 1,024 it added a third to the Fisher's time on split-fmnist)
LINEAR_FISHER_CHUNK = 4096


def batched(strategy, x, y, t, b: int) -> dict[str, torch.Tensor]:
    """BATCHED(b): the squared gradient of each minibatch-mean loss, averaged over the minibatches
    (Avalanche's Fisher)."""
    params = {k: p for k, p in strategy.model.named_parameters() if p.requires_grad}
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    n_batches = 0
    for s in range(0, len(y), b):
        strategy.model.zero_grad(set_to_none=True)
        F.cross_entropy(strategy.logits(x[s:s + b], t[s:s + b]), y[s:s + b]).backward()
        for k, p in params.items():
            if p.grad is not None:
                out[k] += p.grad.detach() ** 2
        n_batches += 1
    strategy.model.zero_grad(set_to_none=True)
    return {k: v / max(1, n_batches) for k, v in out.items()}


def class_weights(variant: str, probs: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """(labels, weights) pairs whose weighted squared gradients sum to the chosen Fisher."""
    if variant == "exact":
        present = (probs > 0).any(0).tolist()
        return [(torch.full_like(y, c), probs[:, c]) for c in range(probs.shape[1]) if present[c]]
    if variant == "sample":
        drawn = torch.multinomial(probs.cpu(), 1, generator=generator).flatten().to(y.device)
        return [(drawn, torch.ones_like(probs[:, 0]))]
    return [(y, torch.ones_like(probs[:, 0]))]


def masked_log_probs(strategy, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # a finite mask: -inf outputs would give NaN gradients through the normaliser
    return F.log_softmax(strategy.mask_logits(logits, t, fill=-1e9), 1)


def linear(strategy, linears: list[nn.Linear], x, y, t, variant: str, generator: torch.Generator):
    """Exact per-sample squared gradients of Linear layers without materialising them: the
    gradient of sample n for label choice k is the outer product delta_nk a_n^T, so
    sum_n sum_k w_nk (delta_nk a_n^T)^2 = (sum_k w_k * delta_k^2)^T a^2. The label choices
    are summed before the one matmul per layer; each choice's deltas come from one backward
    pass to the layers' outputs (no weight gradients), so the exact Fisher over C classes
    costs about one forward, C delta propagations and one weight-gradient-sized product.
    (A single ``is_grads_batched`` backward computes the same deltas but vmap has no batching
    rule for ReLU's backward and loops over samples: 1.7x slower in total on split-fmnist.)"""
    fw = {m: torch.zeros_like(m.weight) for m in linears}
    fb = {m: torch.zeros_like(m.bias) for m in linears if m.bias is not None}
    with recorded_io(linears) as (inputs, outputs):
        for s in range(0, len(y), LINEAR_FISHER_CHUNK):
            xs, ys, ts = (a[s:s + LINEAR_FISHER_CHUNK] for a in (x, y, t))
            with torch.enable_grad():
                logp = masked_log_probs(strategy, strategy.model(xs), ts)
                if any(inputs[m].dim() != 2 for m in linears):
                    return None
                outs = [outputs[m] for m in linears]
                pairs = class_weights(variant, logp.detach().exp(), ys, generator)
                wd2 = [None] * len(linears)  # sum_k w_k * delta_k^2 per layer, (n, out)
                for i, (labels, w) in enumerate(pairs):
                    # d logp[n, label] / d logp, scaled by sqrt(w): the deltas come out scaled by
                    # sqrt(w) (the backward is linear), so their squares carry the weight w
                    pick = F.one_hot(labels, logp.shape[1]).to(logp.dtype).mul_(w.sqrt()[:, None])
                    deltas = torch.autograd.grad(logp, outs, grad_outputs=pick,
                                                 retain_graph=i + 1 < len(pairs))
                    for j, d in enumerate(deltas):
                        wd2[j] = d.square_() if wd2[j] is None else wd2[j].addcmul_(d, d)
                if wd2[0] is None:  # no class with a positive probability (a diverged model's NaNs)
                    continue
                for m, v in zip(linears, wd2):
                    fw[m] += v.T @ inputs[m].square()
                    if m in fb:
                        fb[m] += v.sum(0)
    names = {id(p): k for k, p in strategy.model.named_parameters()}
    out = {names[id(m.weight)]: v / len(y) for m, v in fw.items()}
    out.update({names[id(m.bias)]: v / len(y) for m, v in fb.items()})
    return out


def per_sample(strategy, x, y, t, variant: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """EXACT, SAMPLE or EMPIRICAL: per-sample squared gradients, by the Linear-layer trick for MLPs,
    else by torch.func."""
    linears = linear_layers(strategy.model)
    if linears is not None:
        fisher = linear(strategy, linears, x, y, t, variant, generator)
        if fisher is not None:
            return fisher
    return per_sample_vmap(strategy, x, y, t, variant, generator)


def per_sample_vmap(strategy, x, y, t, variant: str, generator: torch.Generator):
    """Any architecture: per-sample gradients with torch.func (memory-bound, chunked)."""
    model = strategy.model
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    mask = strategy._mask.to(strategy.device) if strategy.setting == "task-il" else None

    def log_probs(p, xi, ti):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))[0]
        if mask is not None:
            row = torch.index_select(mask, 0, ti.reshape(1))[0, :logits.shape[0]]
            logits = torch.where(row, logits, torch.full_like(logits, -1e9))
        return F.log_softmax(logits, 0)

    per_sample = vmap(grad(lambda p, xi, ti, ci: log_probs(p, xi, ti).gather(0, ci.reshape(1))[0]),
                      in_dims=(None, 0, 0, 0))
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    n_params = sum(p.numel() for p in params.values())
    chunk = max(1, min(256, int(2e7 // max(1, n_params))))
    for s in range(0, len(y), chunk):
        xs, ys, ts = x[s:s + chunk], y[s:s + chunk], t[s:s + chunk]
        with torch.no_grad():
            probs = torch.softmax(torch.vmap(log_probs, in_dims=(None, 0, 0))(params, xs, ts), 1)
        for cs, w in class_weights(variant, probs, ys, generator):
            g = per_sample(params, xs, ts, cs)
            for k in out:
                out[k] += torch.einsum("n,n...->...", w, g[k] ** 2)
    return {k: v / len(y) for k, v in out.items()}
