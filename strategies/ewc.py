"""Elastic weight consolidation with the Fisher variants made explicit."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from clbench.scenarios.data import Task
from clbench.strategies.base import Strategy
from clbench.strategies.linear_layers import linear_layers, recorded_io
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from clbench.common.validation import Count, NonNegative, UnitInterval, checked

FisherVariant = Literal["exact", "sample", "empirical", "batched"]
FISHER_VARIANTS: tuple[str, ...] = get_args(FisherVariant)
#: samples per pass of the MLP Fisher: large, because the run's FLOP counter costs a fixed time
#: per operation (at 1,024 it added a third to the Fisher's time on split-fmnist)
LINEAR_FISHER_CHUNK = 4096


class EWC(Strategy):
    """EWC (Kirkpatrick et al., PNAS 2017); online EWC (Schwarz et al., ICML 2018).

    Penalty ``lambda/2 * sum F (theta - theta*)^2`` (``half=False`` drops the 1/2, as Avalanche
    does). ``mode='separate'`` penalises every old task (their penalties summed, kept merged
    as one exact quadratic so a step costs one term whatever the number of tasks); ``'online'`` keeps a running
    Fisher ``F <- gamma F + F_new`` anchored at the latest parameters.

    Fisher variants (van de Ven, "On the computation of the Fisher information in continual
    learning", ICLR 2025 blog post): ``exact`` = E_x sum_y p(y|x) (d log p(y|x))^2, ``sample`` =
    one y drawn from p(y|x), ``empirical`` = the true y, ``batched`` = squared gradient of a
    minibatch-mean loss averaged over minibatches (Avalanche's). Lambda is not portable across
    variants, ``fisher_n`` or the 1/2 factor: all of them go into the run config. The default
    lambda (100) is a stable middle ground, not a tuned value: with SGD lr 0.01 and momentum 0.9,
    lambda = 1000 with the exact Fisher diverges on split-fmnist (the penalty's curvature
    lambda * F exceeds what the step size tolerates).
    """

    name = "ewc"

    @checked
    def __init__(self, model, optimizer=None, *, ewc_lambda: NonNegative = 100.0,
                 mode: Literal["separate", "online"] = "separate", gamma: UnitInterval = 1.0,
                 fisher: FisherVariant = "exact", fisher_n: Count | None = None, fisher_batch: Count | None = None,
                 half: bool = True, **common):
        super().__init__(model, optimizer, **common)
        self.ewc_lambda, self.mode, self.gamma, self.fisher = ewc_lambda, mode, gamma, fisher
        self.fisher_n, self.fisher_batch, self.half = fisher_n, fisher_batch, half
        #: one (Fisher, anchor) pair in both modes: online EWC's running Fisher, or separate EWC's
        #: per-task penalties merged exactly (``_absorb``); ``offset`` is the constant that merging
        #: leaves, so the loss value is the per-task sum too
        self.penalties: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        self.offset = 0.0
        #: the tasks whose penalty is in ``penalties``
        self.penalised: list[int] = []
        self._last_batch = 32
        #: the penalty's gradient for the step under way, added in ``before_step``
        self._pull: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def training_loss(self, x, y, task_ids):
        self._last_batch = len(y)
        loss = self.batch_loss(self.logits(self.augment_inputs(x), task_ids), y)
        self._pull = None
        if self.penalties and self.ewc_lambda > 0:
            value, self._pull = self._penalty_and_pull()
            loss = loss + value  # a constant for autograd: its gradient is added in ``before_step``
        return loss

    def before_step(self) -> None:
        """Adds the penalty's gradient, 2 * factor * F * (theta - theta*), in closed form: fewer
        passes over the parameters than autograd's graph through the penalty."""
        if self._pull is not None:
            scale = 2 * self.factor()
            for p, weighted in self._pull:
                p.grad = weighted.mul_(scale) if p.grad is None else p.grad.add_(weighted, alpha=scale)
            self._pull = None

    def factor(self) -> float:
        return self.ewc_lambda * (0.5 if self.half else 1.0)

    def penalty(self) -> torch.Tensor:
        """``factor * sum F (theta - theta*)^2`` through autograd (the definition; training takes
        the same value and gradient from ``_penalty_and_pull``)."""
        total = self.offset
        named = dict(self.model.named_parameters())
        for fisher, anchor in self.penalties:
            for k, f in fisher.items():
                total = total + (f * (named[k] - anchor[k]).pow(2)).sum()
        return self.factor() * total

    @torch.no_grad()
    def _penalty_and_pull(self) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The penalty's value and, per parameter, F (theta - theta*): half its gradient over the
        factor (one quadratic in both modes, see ``_absorb``)."""
        (fisher, anchor), = self.penalties
        named = dict(self.model.named_parameters())
        total, pull = torch.zeros((), device=self.device), []
        for k, f in fisher.items():
            diff = named[k] - anchor[k]
            weighted = f * diff
            total += torch.vdot(weighted.flatten(), diff.flatten())
            pull.append((named[k], weighted))
        return self.factor() * (total + self.offset), pull

    def _absorb(self, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> None:
        """Separate EWC's sum of per-task penalties, sum_k F_k (theta - theta_k)^2, kept as one
        quadratic A (theta - m)^2 + c with A = sum_k F_k, m the F-weighted mean of the anchors and c
        a constant (completing the square, updated task by task). The objective and its gradient
        are the per-task sum's, but a step costs one penalty term, not one per task."""
        if not self.penalties:
            self.penalties = [(dict(fisher), dict(anchor))]
            return
        A, m = self.penalties[0]
        merged_A, merged_m = {}, {}
        for k, f in fisher.items():
            total = A[k] + f
            mean = torch.where(total > 0, (A[k] * m[k] + f * anchor[k]) / total.clamp_min(1e-30), anchor[k])
            self.offset += float((A[k] * (m[k] - mean).pow(2) + f * (anchor[k] - mean).pow(2)).sum())
            merged_A[k], merged_m[k] = total, mean
        self.penalties = [(merged_A, merged_m)]

    def memory_held(self):
        tensors = [t for fisher, anchor in self.penalties for t in (*fisher.values(), *anchor.values())]
        return 0, sum(t.element_size() * t.nelement() for t in tensors)

    def after_task(self, task: Task) -> None:
        """One Fisher and anchor per task, at its first end (a recurring task is not re-consolidated),
        merged into the penalty (separate: summed exactly; online: the decayed running Fisher)."""
        if not self.first_end(task):
            return
        new = self.compute_fisher(task)
        anchor = {k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad}
        self.penalised.append(task.id)
        if self.mode == "separate":
            self._absorb(new, anchor)
        else:
            old = self.penalties[0][0] if self.penalties else None
            merged = {k: v + (self.gamma * old[k] if old is not None else 0) for k, v in new.items()}
            self.penalties = [(merged, anchor)]

    # ---------------------------------------------------------------- Fisher information
    def compute_fisher(self, task: Task) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of the current model on ``task``'s training data (eval mode)."""
        data = task.train
        n = len(data)
        idx = torch.arange(n)
        if self.fisher_n is not None and self.fisher_n < n:
            idx = torch.randperm(n, generator=self.generator)[:self.fisher_n].sort().values
        was = self.model.training
        self.model.eval()
        try:
            x, y = data.batch(idx, self.device)
            t = torch.full_like(y, task.id)
            if self.fisher == "batched":
                return self._fisher_batched(x, y, t)
            return self._fisher_per_sample(x, y, t)
        finally:
            self.model.train(was)

    def _fisher_batched(self, x, y, t):
        b = self.fisher_batch or self._last_batch
        params = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
        out = {k: torch.zeros_like(p) for k, p in params.items()}
        n_batches = 0
        for s in range(0, len(y), b):
            self.model.zero_grad(set_to_none=True)
            F.cross_entropy(self.logits(x[s:s + b], t[s:s + b]), y[s:s + b]).backward()
            for k, p in params.items():
                if p.grad is not None:
                    out[k] += p.grad.detach() ** 2
            n_batches += 1
        self.model.zero_grad(set_to_none=True)
        return {k: v / max(1, n_batches) for k, v in out.items()}

    def _class_weights(self, probs: torch.Tensor, y: torch.Tensor):
        """(labels, weights) pairs whose weighted squared gradients sum to the chosen Fisher."""
        if self.fisher == "exact":
            present = (probs > 0).any(0).tolist()
            return [(torch.full_like(y, c), probs[:, c]) for c in range(probs.shape[1]) if present[c]]
        if self.fisher == "sample":
            drawn = torch.multinomial(probs.cpu(), 1, generator=self.generator).flatten().to(y.device)
            return [(drawn, torch.ones_like(probs[:, 0]))]
        return [(y, torch.ones_like(probs[:, 0]))]

    def _masked_log_probs(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # a finite mask: -inf outputs would give NaN gradients through the normaliser
        return F.log_softmax(self.mask_logits(logits, t, fill=-1e9), 1)

    def _fisher_linear(self, linears: list[nn.Linear], x, y, t):
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
                    logp = self._masked_log_probs(self.model(xs), ts)
                    if any(inputs[m].dim() != 2 for m in linears):
                        return None
                    outs = [outputs[m] for m in linears]
                    pairs = self._class_weights(logp.detach().exp(), ys)
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
        names = {id(p): k for k, p in self.model.named_parameters()}
        out = {names[id(m.weight)]: v / len(y) for m, v in fw.items()}
        out.update({names[id(m.bias)]: v / len(y) for m, v in fb.items()})
        return out

    def _fisher_per_sample(self, x, y, t):
        linears = linear_layers(self.model)
        if linears is not None:
            fisher = self._fisher_linear(linears, x, y, t)
            if fisher is not None:
                return fisher
        return self._fisher_vmap(x, y, t)

    def _fisher_vmap(self, x, y, t):
        """Any architecture: per-sample gradients with torch.func (memory-bound, chunked)."""
        model = self.model
        params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        buffers = {k: b.detach() for k, b in model.named_buffers()}
        mask = self._mask.to(self.device) if self.setting == "task-il" else None

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
            for cs, w in self._class_weights(probs, ys):
                g = per_sample(params, xs, ts, cs)
                for k in out:
                    out[k] += torch.einsum("n,n...->...", w, g[k] ** 2)
        return {k: v / len(y) for k, v in out.items()}

    def config(self):
        return {**super().config(), "ewc_lambda": self.ewc_lambda, "mode": self.mode, "gamma": self.gamma,
                "fisher": self.fisher, "fisher_n": self.fisher_n or "all",
                "fisher_batch": self.fisher_batch if self.fisher == "batched" else None,
                "penalty": "lambda/2 * sum F (theta - theta*)^2" if self.half else "lambda * sum F (theta - theta*)^2"}
