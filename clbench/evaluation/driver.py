"""The evaluator and its schedule inside a training loop, the same for clbench's loop, the Avalanche
plugin and a schedule replayed over recorded curves (``clbench.evaluation.replay``): evaluations
(timed, reported to the schedule and the progress callback), probes, the snapshots of the last
iterations and the looks back at them that a schedule asks for."""

from __future__ import annotations

import time

from clbench.evaluation.schedules import EVALUATE, PROBE, Schedule
from clbench.evaluation.snapshots import SnapshotRing


class Evaluations:
    def __init__(self, evaluator, schedule: Schedule, strategy, n_total: int | None = None, progress=None,
                 ring=None):
        self.evaluator, self.schedule, self.strategy = evaluator, schedule, strategy
        self.n_total, self.progress = n_total, progress
        self.ring = ring if ring is not None or not schedule.depth else SnapshotRing(strategy, schedule.depth)
        if self.ring is not None and self.ring.depth < schedule.depth:  # a network too large for the ring
            schedule.fit_depth(self.ring.depth)
        #: seconds spent evaluating: evaluations, probes, looks back and keeping snapshots
        self.seconds = 0.0

    def updated(self, n: int) -> None:
        """After update ``n``: keep its prediction tensors if the schedule may look back at them."""
        if self.ring is not None and self.schedule.keeps():
            t0 = time.perf_counter()
            self.ring.keep(n)
            self.seconds += time.perf_counter() - t0

    def evaluate(self, n: int, n_tasks: int, seen: int, trained: int) -> None:
        """Tasks 0..n_tasks-1 after update ``n``; ``seen`` tasks have been trained on. Then the looks
        back the schedule asks for."""
        t0 = time.perf_counter()
        ev = self.evaluator.evaluate(self.strategy, n_tasks, n, trained)
        self.schedule.observe(n, ev, seen, trained)
        while (look := self.schedule.next_look()) is not None:
            m, tasks = look
            with self.ring.look(m):
                back = self.evaluator.evaluate(self.strategy, n_tasks, m, trained, tasks=tasks)
            self.schedule.observe_look(m, tasks, (back.correct.float() / back.counts.clamp(min=1).float()).tolist())
        self.seconds += time.perf_counter() - t0
        if self.progress is not None:
            self.progress(n, self.n_total, trained, ev)

    def between(self, n: int, seen: int, trained: int) -> None:
        """After update ``n`` inside a segment: what the schedule asks for."""
        action = self.schedule.at(n)
        if action == EVALUATE:
            self.evaluate(n, seen, seen, trained)
        elif action == PROBE:
            t0 = time.perf_counter()
            accuracy = self.evaluator.probe(self.strategy, seen, self.schedule.probe_size)
            moved = self.schedule.observe_probe(n, accuracy)
            self.seconds += time.perf_counter() - t0
            if moved:  # evaluate where the move was seen, then densely on
                self.evaluate(n, seen, seen, trained)
