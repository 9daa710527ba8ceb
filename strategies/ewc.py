"""Elastic weight consolidation with the Fisher variants made explicit."""

from __future__ import annotations

from typing import Literal

import torch

from clbench.common.validation import Count, NonNegative, UnitInterval, checked
from clbench.scenarios.data import Task
from clbench.strategies import fisher as estimators
from clbench.strategies.base import Strategy
from clbench.strategies.fisher import FisherVariant


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

    def memory_samples(self):
        return 0  # a Fisher and an anchor per penalty: bytes, measured by the runner

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
            x = _Inputs(data, idx, self.device)
            y = data.y.index_select(0, idx).to(self.device)
            t = torch.full_like(y, task.id)
            if self.fisher == "batched":
                return estimators.batched(self, x, y, t, self.fisher_batch or self._last_batch)
            return estimators.per_sample(self, x, y, t, self.fisher, self.generator)
        finally:
            self.model.train(was)

    def config(self):
        return {**super().config(), "ewc_lambda": self.ewc_lambda, "mode": self.mode, "gamma": self.gamma,
                "fisher": self.fisher, "fisher_n": self.fisher_n or "all",
                "fisher_batch": self.fisher_batch if self.fisher == "batched" else None,
                "penalty": "lambda/2 * sum F (theta - theta*)^2" if self.half else "lambda * sum F (theta - theta*)^2"}


class _Inputs:
    """A task's training inputs as the Fisher estimators read them, a slice (``x[s:e]``) at a
    time: normalised floats of the slice only. The whole task at once was 188 MB of floats per
    permuted-fmnist task (and its uint8 gather), held beside the estimator's forwards; the values
    are the same (the conversion is elementwise)."""

    def __init__(self, data, idx: torch.Tensor, device: torch.device):
        self.data, self.idx, self.device = data, idx, device

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self.data.batch(self.idx[rows], self.device)[0]
