"""Worker processes: how many to run at once (the CPU cores this process may use) and how they
start. Nothing here imports torch, so the CLI can start the workers' server before it imports
torch itself, and reports and plots can ask too."""

from __future__ import annotations

import multiprocessing
import os
import sys

#: what every worker needs, imported once in the fork server instead of once per worker (torch,
#: the runner and its strategies, torch._dynamo, which the first optimiser step imports, and the
#: plots): about 5 s per process on this project's 2-core machines; first, ``quiet_server``, so
#: that a Ctrl-C during those seconds is the CLI's to report, not a traceback of the server's
PRELOAD = ["clbench.sweep.quiet_server", "clbench.run.runner", "torch._dynamo", "clbench.results.plots"]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs(threads: int, device: str = "cpu") -> int:
    """As many parallel runs as fit the CPU cores this process may use, ``threads`` each: the
    numbers are the same for any count (each run fixes its threads), only the wall time changes.
    On a GPU one run at a time: parallel processes would each hold a CUDA context and share one
    device without running faster."""
    if not device.startswith("cpu"):
        return 1
    return max(1, usable_cores() // max(1, threads))


def worker_context():
    """The multiprocessing context of clbench's worker pools: a fork server (a fresh process that
    imports ``PRELOAD`` once and forks each worker from that state, before any thread or CUDA
    context exists), or spawn where there is none (Windows). Workers get the caller's ``sys.path``
    and working folder either way."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


_server_started = False


def start_worker_server() -> None:
    """Start the fork server now, without waiting for it: it imports ``PRELOAD`` while the caller
    goes on (the CLI: importing torch and checking the experiment), so the first pool's workers
    start at once."""
    global _server_started
    if worker_context().get_start_method() == "forkserver":
        import signal
        import threading
        from multiprocessing import forkserver

        # the server's interpreter starts with Ctrl-C ignored (an ignored signal survives exec): a
        # Ctrl-C while it imports its own site module printed a fatal error and a traceback beside
        # the CLI's one line (seen with the machine loaded); ``quiet_server`` keeps it ignored, and
        # this process's handler is back a few milliseconds later
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            forkserver.ensure_running()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        _server_started = True


def drawing_context():
    """Where plots may be drawn in parallel, or None to draw them in this process: forked from this
    process while it has not imported torch (``clbench plot``: nothing heavy or threaded to
    inherit), from the fork server when one is running already (``clbench run``); never by
    starting one, whose preloads (torch, about 8 s here) cost more than drawing."""
    if "torch" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return worker_context() if _server_started else None
