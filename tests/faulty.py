"""Strategies that fail or misreport on purpose, importable by path (``tests.faulty:RaisesOnSeed1``) so that the
processes of the local pool and Ray's workers build them as the parent would."""

from __future__ import annotations

import os
from pathlib import Path

from clbench.common.validation import checked
from clbench.strategies.base import Finetune

#: the seed the generator of a strategy built with seed 1 starts from (``Strategy.__init__``)
SEED_1 = 1 + 104729


class RaisesOnSeed1(Finetune):
    """Finetuning that raises at its first update when built with seed 1."""

    name = "raises"

    def observe(self, x, y, task_ids=None):
        if self.generator.initial_seed() == SEED_1:
            raise RuntimeError("out of cheese")
        return super().observe(x, y, task_ids)


class DiesOnSeed1(Finetune):
    """Finetuning whose process dies (as if killed) at its first update when built with seed 1;
    each attempt appends a line to ``tally`` first, so a test can count the attempts."""

    name = "dies"

    @checked
    def __init__(self, model, optimizer=None, *, tally: str = "", **common):
        super().__init__(model, optimizer, **common)
        self.tally = tally

    def observe(self, x, y, task_ids=None):
        if self.generator.initial_seed() == SEED_1:
            if self.tally:
                with Path(self.tally).open("a") as f:
                    f.write(f"{os.getpid()}\n")
            os._exit(3)
        return super().observe(x, y, task_ids)


class KeepsTeacher(Finetune):
    """LwF-style: finetuning that keeps a frozen copy of the network at each task end and never says
    so (no ``memory_samples``): the runner must still measure the copy."""

    def after_task(self, task):
        import copy

        self.teacher = copy.deepcopy(self.model).requires_grad_(False)


class WaitsForRelease(Finetune):
    """Finetuning whose first update waits (up to 2 minutes) until the file ``release`` exists: a run
    that holds its experiment folder for exactly as long as a test needs, on any machine."""

    name = "waits"

    @checked
    def __init__(self, model, optimizer=None, *, release: str = "", **common):
        super().__init__(model, optimizer, **common)
        self.release = release

    def observe(self, x, y, task_ids=None):
        import time

        deadline = time.monotonic() + 120
        while self.release and not Path(self.release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().observe(x, y, task_ids)
