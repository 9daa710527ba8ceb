"""The view-batch model as a wrapper over any strategy."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from clbench.common.errors import InputError
from clbench.common.validation import Count, NonNegative, NonNegativeInt, UnitInterval, checked
from clbench.evaluation.snapshots import prediction_tensors
from clbench.scenarios.data import Scenario, Task
from clbench.strategies.base import Strategy


def view_consistency_loss(logits: torch.Tensor, views: int) -> torch.Tensor:
    """KL(p_anchor.detach() || p_view) over softmax outputs, averaged over (group, view 2..V) pairs
    *and over classes*: the authors' ``F.kl_div`` with its default reduction 'mean' divides the
    summed KL by the number of elements, so ``ssl_weight=1`` here is their strength (a C-fold
    stronger term would need ``ssl_weight=C``).

    ``logits`` hold ``views`` consecutive rows per sample, the first being the anchor. Masked
    (-inf) classes contribute 0 to the sum but count in the class average, as in their code.
    """
    if views < 2:
        return logits.new_zeros(())
    g = logits.view(-1, views, logits.shape[-1])
    log_p = F.log_softmax(g, -1)
    anchor_log = log_p[:, :1].detach()
    anchor = anchor_log.exp()
    kl = torch.where(anchor > 0, anchor * (anchor_log - log_p[:, 1:]), torch.zeros_like(log_p[:, 1:]))
    return kl.sum(-1).mean() / logits.shape[-1]


class ViewBatch(Strategy):
    """View-batch model (Kang et al., "Do your best and get enough rest for continual learning",
    CVPR 2025) around any strategy: ``ViewBatch(ER(model), views=4)``.

    *Replay*: the stream repeats each sample ``views`` times in a row inside one batch, keeping the
    batch size and the iterations per epoch, so a sample comes back after about ``views`` times as
    many updates (``views`` is read by the stream builder). Groups are formed by **sample index**:
    the authors' code groups consecutive equal labels, which with two classes per task pairs
    different images in about a fifth of the cases — not copied here. A wrapped replay strategy
    keeps raw samples in its memory (one per group) and replays them as view groups too.
    *Self-supervision*: view 1 of a group (the anchor) gets at most weak augmentation, the others
    the run's augmentation family (``augment``: the same family a baseline without views gets);
    ``ssl_weight * KL(p_anchor.detach() || p_view)`` (averaged as the authors' code does) is
    added to the wrapped strategy's loss on every grouped row, current and replayed, off during
    first ``ssl_warmup`` of each task's updates: the authors switch it on after epoch 5 of 50, a
    tenth of the task, so the default is 0.1 and the term acts at every task length (a warm-up of
    5 *epochs* would leave it off in every default scenario but split-digits).
    ``ssl_warmup_epochs``, when given, counts whole epochs instead (the authors' 5 in their
    50-epoch setting). The run's config records how many updates the term acted in
    (``ssl_updates``); the leaderboard says when it never did. The wrapped strategy's own
    mechanism (buffer, penalty, projection) runs unchanged underneath.
    """

    @checked
    def __init__(self, inner: Strategy, *, views: Count = 4, ssl_weight: NonNegative = 1.0,
                 ssl_warmup: UnitInterval = 0.1, ssl_warmup_epochs: NonNegativeInt | None = None):
        if not isinstance(inner, Strategy) or not inner.uses_model:
            raise InputError("view-batch wraps a strategy that trains a model")
        self.inner = inner
        inner.views = views
        self.views, self.ssl_weight = views, ssl_weight
        self.ssl_warmup, self.ssl_warmup_epochs = ssl_warmup, ssl_warmup_epochs
        self.name = f"vb-{inner.name}"
        self._iter_in_task = 0
        self._task_size = 1
        self._segment_updates: int | None = None
        #: updates in which the self-supervised term acted (0: it never did)
        self.ssl_updates = 0

    # everything the evaluator and the runner look at comes from the wrapped strategy
    @property
    def model(self):
        return self.inner.model

    @property
    def setting(self):
        return self.inner.setting

    @property
    def augment(self):
        return self.inner.augment

    def memory_samples(self):
        return self.inner.memory_samples()

    def label_suffix(self) -> str:
        return self.inner.label_suffix()

    def before_stream(self, scenario: Scenario) -> None:
        self.inner.before_stream(scenario)

    def before_segment(self, updates: int) -> None:
        self._segment_updates = updates
        self.inner.before_segment(updates)

    def before_task(self, task: Task) -> None:
        self.inner.before_task(task)
        self._iter_in_task = 0
        self._task_size = len(task.train)

    def after_task(self, task: Task) -> None:
        self.inner.after_task(task)

    def predict(self, x, task_ids=None):
        return self.inner.predict(x, task_ids)

    def prediction_state(self) -> list[torch.Tensor]:
        return prediction_tensors(self.inner)

    def observe(self, x, y, task_ids=None):
        if len(x) % self.views:
            raise InputError(f"a batch of {len(x)} samples is not made of groups of views={self.views}")
        on = self.ssl_weight > 0 and self.views > 1 and self._warm(len(y))
        self._iter_in_task += 1
        self.ssl_updates += int(on)
        self.inner.extra_loss = (lambda logits: self.ssl_weight * view_consistency_loss(logits, self.views)) \
            if on else None
        try:
            return self.inner.observe(x, y, task_ids)
        finally:
            self.inner.extra_loss = None

    def _warm(self, batch: int) -> bool:
        """Whether this update (of ``batch`` rows) is past the warm-up of its task."""
        if self.ssl_warmup_epochs is not None:  # the stream keeps the iterations of an epoch
            return self._iter_in_task // max(1, math.ceil(self._task_size / batch)) >= self.ssl_warmup_epochs
        updates = self._segment_updates or 1
        return self._iter_in_task >= math.ceil(self.ssl_warmup * updates)

    def config(self):
        return {**self.inner.config(), "name": self.name, "views": self.views, "ssl_weight": self.ssl_weight,
                "ssl_warmup": self.ssl_warmup, "ssl_warmup_epochs": self.ssl_warmup_epochs,
                "ssl_updates": self.ssl_updates,
                "ssl_loss": "KL(anchor || view) averaged over view pairs and classes (authors' kl_div 'mean')",
                "groups": "by sample index", "anchor_augment": "weak" if self.augment != "none" else "none"}
