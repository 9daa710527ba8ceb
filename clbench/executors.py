"""Where runs execute: in this process, or in a pool of local processes. Every executor maps
the same ``run_guarded`` over the runs to do and hands each ``Outcome`` back as it arrives, so
failure isolation (a run that raises is recorded in its folder and the sweep goes on) and
identical numbers (each run fixes its own thread count, ``RunSettings.threads``) hold for any
executor, the Ray one included, without being written twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench import io
from clbench.runner import RunConfig, run

#: the file a failed run leaves in its (otherwise empty, hence incomplete) run folder
ERROR_FILE = "error.json"


@dataclass
class Outcome:
    """What became of one run: its summary, or the one-line error it raised."""

    config: RunConfig
    out: Path
    summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def run_guarded(config: RunConfig, out: str | Path, progress=None) -> Outcome:
    """Run one configuration; an exception is written to ``out/error.json`` (with its traceback)
    and returned, not raised, so one failing run never ends a sweep. The folder stays incomplete,
    so the next invocation retries it; a success replaces the folder, error and all."""
    out = Path(out)
    try:
        return Outcome(config, out, summary=run(config, out, progress=progress).summary)
    except Exception as e:  # noqa: BLE001 - any failure of a run is recorded, KeyboardInterrupt is not
        error = f"{type(e).__name__}: {e}".strip().splitlines()[0]
        io.write_json(out / ERROR_FILE, {"error": error, "traceback": traceback.format_exc(),
                                         "run": config.to_dict(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return Outcome(config, out, error=error)


def serial(todo: list[tuple[RunConfig, Path]], progress_for: Callable[[RunConfig], Any] | None = None
           ) -> Iterator[Outcome]:
    """Runs one after the other in this process (per-run progress bars)."""
    for config, out in todo:
        yield run_guarded(config, out, progress_for(config) if progress_for else None)


def process_pool(todo: list[tuple[RunConfig, Path]], jobs: int) -> Iterator[Outcome]:
    """Runs in ``jobs`` spawned processes. Workers ignore SIGINT (the parent decides), exit when
    their parent dies (SIGKILL included: a watchdog thread notices the re-parenting), and are
    terminated if the parent is interrupted, so nothing is left running."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(run_guarded, config, str(out)): (config, out) for config, out in todo}
        for f in as_completed(futures):
            config, out = futures[f]
            try:
                yield f.result()
            except Exception as e:  # noqa: BLE001 - the worker itself died (killed, out of memory)
                yield Outcome(config, out, error=f"worker process failed: {type(e).__name__}: {e}")
    except BaseException:
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _worker_start(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="orphan-guard").start()


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)
