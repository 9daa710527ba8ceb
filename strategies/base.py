"""The strategy protocol (readable like Mammoth's ``observe``) and the shared update step.

    before_stream(scenario)   # optional: strategies that need the whole scenario (offline joint)
    before_task(task)         # boundary-aware strategies consolidate here
    observe(x, y, task_ids)   # one optimisation step; returns the (detached) loss
    after_task(task)
    predict(x, task_ids)      # logits for the evaluator

A strategy is a plain object around an ``nn.Module`` and an optimiser, so it runs in the
clbench runner and in a user's own loop alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clbench.common.errors import InputError
from clbench.common.validation import Count, NonNegative, NonNegativeInt, UnitInterval, checked
from clbench.scenarios.data import Scenario, Setting, Task, seeded_generator
from clbench.strategies import augment as augmentation


class Strategy:
    """Base class: a model, an optimiser, the setting and the task -> classes mask.

    In ``task-il`` the logits are masked to the classes of each sample's task, in training and
    in prediction (van de Ven et al. 2022 implement task-IL this way). ``task_classes`` may be
    given up front (the runner does, so unseen tasks can be evaluated too) or is learned from
    ``before_task``.
    """

    name = "base"
    #: whether the runner must build a trainable network for this strategy
    uses_model = True

    @checked
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, lr: NonNegative = 0.01,
                 momentum: UnitInterval = 0.9, setting: Setting = "class-il",
                 task_classes: list[list[NonNegativeInt]] | None = None, n_classes: Count | None = None,
                 seed: int = 0, augment: augmentation.Family = "none"):
        self.augment = augment
        #: samples per view group in a batch (set by the view-batch wrapper; 1 = plain batches)
        self.views = 1
        self.augment_generator = seeded_generator(seed, "augment")
        #: tasks whose first end has passed: consolidation happens once per task, whatever the ordering
        self.consolidated: list[int] = []
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = optimizer if optimizer is not None or not params else torch.optim.SGD(
            params, lr=lr, momentum=momentum)
        self.setting = setting
        self.n_classes = n_classes
        self.generator = torch.Generator().manual_seed(int(seed) + 104729)
        self._task_classes: dict[int, list[int]] = {}
        self._mask: torch.Tensor | None = None
        for t, classes in enumerate(task_classes or []):
            self._register_task(t, classes)
        self.current_task: int | None = None
        self.tasks_seen: list[int] = []
        #: an extra term on the current batch's logits (view-batch self-supervision plugs in here)
        self.extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None

    # ---------------------------------------------------------------- setting and masking
    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        for b in self.model.buffers():
            return b.device
        return torch.device("cpu")

    def _register_task(self, task_id: int, classes: list[int]) -> None:
        if self._task_classes.get(task_id) == list(classes):
            return
        self._task_classes[task_id] = list(classes)
        n_out = self.n_classes or 1 + max(c for cl in self._task_classes.values() for c in cl)
        mask = torch.zeros(max(self._task_classes) + 1, n_out, dtype=torch.bool)
        for t, cl in self._task_classes.items():
            mask[t, cl] = True
        self._mask = mask

    def mask_logits(self, logits: torch.Tensor, task_ids: torch.Tensor | None, fill: float = float("-inf")
                    ) -> torch.Tensor:
        """Task-IL: outputs outside each sample's task become ``fill`` (-inf; a finite value where
        gradients must stay finite). Other settings: unchanged."""
        if self.setting != "task-il":
            return logits
        if task_ids is None:
            raise InputError("task-il prediction needs the task id of every sample")
        if self._mask.device != logits.device:  # moved once, not every step
            self._mask = self._mask.to(logits.device)
        mask = self._mask[task_ids.to(logits.device)]
        if mask.shape[1] < logits.shape[1]:
            mask = F.pad(mask, (0, logits.shape[1] - mask.shape[1]))
        return logits.masked_fill(~mask[:, :logits.shape[1]], fill)

    def logits(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.mask_logits(self.model(x), task_ids)

    def augment_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The training transform (the ``augment`` family, batched on the device); with view groups
        the anchor of each group gets at most ``weak``. Memories store what comes in, un-augmented."""
        return augmentation.apply_views(x, self.augment, self.views, self.augment_generator)

    # ---------------------------------------------------------------- memory budget
    @classmethod
    def memory_params(cls, budget: int, n_tasks: int) -> dict[str, Any]:
        """The parameters through which this strategy spends a memory budget of ``budget`` samples
        over ``n_tasks`` tasks (empty: it keeps no samples). An experiment gives every memory
        strategy the same budget; each spends it its own way."""
        return {}

    def memory_samples(self) -> int | None:
        """The samples this strategy keeps in its memory (None: it does not say, and the runner
        counts the tensors it holds shaped like a batch of inputs). Its bytes are measured by the
        runner for every strategy (``clbench.evaluation.held``): reported beside accuracy, since a
        larger memory buys accuracy."""
        return None

    def kept_data(self) -> list[torch.Tensor]:
        """The scenario's own tensors this strategy keeps as its memory, referenced rather than
        copied (joint training: every task's); the runner counts their bytes as held, as it
        would a copy's. Empty by default."""
        return []

    def first_end(self, task: Task) -> bool:
        """True the first time ``task`` ends, and records it: rehearsal segments of a task that
        comes back (recurring streams) train without consolidating it again."""
        if task.id in self.consolidated:
            return False
        self.consolidated.append(task.id)
        return True

    # ---------------------------------------------------------------- protocol
    def before_stream(self, scenario: Scenario) -> None:
        """Called once before training; registers every task's classes for task-il masking."""
        for t in scenario.tasks:
            self._register_task(t.id, t.classes)

    def before_segment(self, updates: int) -> None:
        """The number of updates of the segment about to start (``before_task`` follows): for a
        strategy whose schedule scales with the task's length (view-batch's warm-up)."""

    def before_task(self, task: Task) -> None:
        self._register_task(task.id, task.classes)
        self.current_task = task.id
        if task.id not in self.tasks_seen:
            self.tasks_seen.append(task.id)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """One optimisation step on a batch; returns the detached loss (no host sync)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.training_loss(x, y, task_ids)
        loss.backward()
        self.before_step()
        self.optimizer.step()
        return loss.detach()

    def training_loss(self, x, y, task_ids) -> torch.Tensor:
        """The loss of one step; strategies add their terms (replay, penalties) here."""
        return self.batch_loss(self.logits(self.augment_inputs(x), task_ids), y)

    def batch_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the current batch, plus ``extra_loss`` when a wrapper set one."""
        loss = F.cross_entropy(logits, y)
        return loss if self.extra_loss is None else loss + self.extra_loss(logits)

    def before_step(self) -> None:
        """Hook between ``backward`` and ``optimizer.step`` (gradient projection)."""

    def after_task(self, task: Task) -> None:
        """Boundary hook: consolidation (EWC's Fisher, GEM's memory) happens here, once per task
        (``first_end``)."""
        self.first_end(task)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits used by the evaluator (the caller sets eval mode)."""
        return self.logits(x, task_ids)

    # ---------------------------------------------------------------- bookkeeping
    #: whether training follows the stream's task boundaries (False: every task from the first
    #: update, as offline joint training; plots then claim no boundary effect such as a gap)
    task_boundaries = True

    def config(self) -> dict[str, Any]:
        """Everything about this strategy that changes the numbers, for the run's config.json."""
        return {"name": self.name, "setting": self.setting, "augment": self.augment,
                "task_boundaries": self.task_boundaries}

    def label_suffix(self) -> str:
        """Appended to the strategy's name in the leaderboard: a baseline whose meaning depends on a
        backbone says which (``nmc[pixels]`` must not read as a pretrained-feature baseline)."""
        return ""


class Finetune(Strategy):
    """Plain SGD on the stream, nothing against forgetting: the lower bound of every comparison."""

    name = "finetune"
