"""Where runs execute: in this process, in a pool of local processes, or as Ray tasks. Every executor maps
the same ``run_guarded`` over the runs to do and hands each ``Outcome`` back as it arrives, so
failure isolation (a run that raises is recorded in its folder and the sweep goes on) and
identical numbers (each run fixes its own thread count, ``RunSettings.threads``) hold for any
executor, the Ray one included, without being written twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench.common import io
from clbench.common.errors import InputError
from clbench.common.io import ERROR_FILE
from clbench.run.resolve import ResolvedRun
from clbench.run.runner import run
from clbench.run.settings import RunConfig
from clbench.sweep.processes import start_worker_server, worker_context


@dataclass
class Outcome:
    """What became of one run: its summary, or the one-line error it raised."""

    config: RunConfig
    out: Path
    summary: dict[str, Any] | None = None
    error: str | None = None
    #: the Ray node it ran on (``host address node-id``), for runs made as Ray tasks
    node: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


#: how many times a run is tried before it is recorded as failed (a run that raises, or whose worker
#: dies, is retried once: transient faults such as a lost node or memory pressure pass, a
#: deterministic error costs one repeat)
ATTEMPTS = 2


def plain(config: RunConfig | ResolvedRun) -> RunConfig:
    """The run's settings, whether it comes resolved (an experiment's) or not."""
    return config.config if isinstance(config, ResolvedRun) else config


def run_guarded(config: RunConfig | ResolvedRun, out: str | Path, progress=None, attempts: int = ATTEMPTS
                ) -> Outcome:
    """Run one configuration, trying again once if it raises; the last exception is written to
    ``out/error.json`` (with its traceback) and returned, not raised, so one failing run never ends
    a sweep. The folder stays incomplete, so the next invocation retries it; a success replaces the
    folder, error and all."""
    out = Path(out)
    for _ in range(attempts):
        try:
            return Outcome(plain(config), out, summary=run(config, out, progress=progress).summary)
        except Exception as e:  # noqa: BLE001 - any failure of a run is recorded, KeyboardInterrupt is not
            error = f"{type(e).__name__}: {e}".strip().splitlines()[0]
            trace = traceback.format_exc()
    record_failure(config, out, error, trace, attempts)
    return Outcome(plain(config), out, error=error)


def record_failure(config: RunConfig | ResolvedRun, out: Path, error: str, trace: str, attempts: int) -> None:
    io.write_json(out / ERROR_FILE, {"error": error, "traceback": trace, "attempts": attempts,
                                     "run": plain(config).to_dict(),
                                     "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def died(config: RunConfig | ResolvedRun, out: Path, why: str) -> Outcome:
    """The outcome of a run whose worker process died on every attempt (killed, out of memory)."""
    error = f"worker process died on each of {ATTEMPTS} attempts: {why}"
    record_failure(config, out, error, "", ATTEMPTS)
    return Outcome(plain(config), out, error=error)


#: runs to do and their folders
Todo = list[tuple[RunConfig | ResolvedRun, Path]]


def serial(todo: Todo, progress_for: Callable[[RunConfig], Any] | None = None) -> Iterator[Outcome]:
    """Runs one after the other in this process (per-run progress bars)."""
    for config, out in todo:
        yield run_guarded(config, out, progress_for(plain(config)) if progress_for else None)


def start_pool(jobs: int):
    """A pool of ``jobs`` worker processes (see ``process_pool``), forked from the fork server that
    holds torch and the runner already imported (``processes.worker_context``)."""
    from concurrent.futures import ProcessPoolExecutor

    start_worker_server()
    return ProcessPoolExecutor(jobs, mp_context=worker_context(), initializer=_worker_start)


def stop_pool(pool) -> None:
    """End a pool's workers now, whatever they are doing."""
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def process_pool(todo: Todo, jobs: int) -> Iterator[Outcome]:
    """Runs in ``jobs`` worker processes. Workers ignore SIGINT (the parent decides), exit when
    the parent dies (SIGKILL included: a watchdog thread waits on the parent's end of a pipe; the
    fork server ends once they have), and are terminated if the parent is interrupted, so nothing
    is left running.

    A worker that dies breaks a ``concurrent.futures`` pool and every run in it; the runs that were
    in flight are then retried one at a time, each alone in a fresh process, so the one that killed
    its worker is the only one recorded failed (after its second death); the others go on."""
    queue = list(todo)
    while queue:
        in_flight, queue = yield from _pool_round(queue, jobs)
        for config, out in in_flight:
            again, _ = yield from _pool_round([(config, out)], 1)
            if again:
                yield died(config, out, "its process ended without a result (killed, or out of memory?)")


def _pool_round(todo: Todo, jobs: int):
    """Run ``todo`` in one pool, keeping at most ``jobs`` runs submitted, so that when a worker dies
    the runs in flight (the suspects) are known exactly. Returns (in flight at a death, not started)."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = start_pool(jobs)
    waiting, running = list(todo), {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                config, out = waiting[0]
                try:
                    future = pool.submit(run_guarded, config, str(out))
                except BrokenProcessPool:  # a worker died since the last wait: the same as seen there
                    pool.shutdown(wait=False, cancel_futures=True)
                    return list(running.values()), waiting
                running[future] = waiting.pop(0)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    outcome = f.result()
                except BrokenProcessPool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    return list(running.values()), waiting
                except Exception as e:  # noqa: BLE001 - the run could not be handed to a worker
                    config, out = running[f]
                    outcome = Outcome(plain(config), out, error=f"could not run in a worker: {type(e).__name__}: {e}")
                del running[f]
                yield outcome
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    return [], []


def _worker_start() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the process that asked for this worker (not the fork server it was forked from, which lives
    # as long as any worker does): its end of the pipe closes when it dies, SIGKILL included
    sentinel = multiprocessing.parent_process().sentinel
    threading.Thread(target=_exit_with_parent, args=(sentinel,), daemon=True, name="orphan-guard").start()


def _exit_with_parent(sentinel: int) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])
    os._exit(1)


# ---------------------------------------------------------------- Ray

@contextlib.contextmanager
def ray_session(address: str | None = None, modules: list[str] | None = None):
    """Ray for the duration of a command: the instance already initialised in this process (tests,
    notebooks), else the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``),
    else a local instance on this machine's cores, shut down afterwards. ``modules``: the files or
    folders of the user's own modules (``imports.own_modules``), shipped to every worker through
    Ray's runtime environment (``py_modules``), so a ``my_data.py`` beside the experiment is
    importable on nodes that do not have it. Ray takes local modules only for a whole job, so a Ray
    initialised before clbench (a notebook's ``ray.init``) must be given them there."""
    try:
        import ray
    except ImportError:
        raise InputError("the Ray executor needs Ray: pip install 'clbench[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    if address is None:  # the local instance keeps Ray's default token authentication; its notice is noise here
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    else:
        check_reachable(address)
    try:
        # without --address, a private instance ("local"), never a cluster already started on the
        # machine (Ray's current-cluster file or RAY_ADDRESS would otherwise be joined)
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="warning",
                 runtime_env={"py_modules": modules} if modules else None)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(f"cannot start or join {where}: {str(e).strip().splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


#: seconds to wait for a TCP connection to ``--address`` before saying nothing listens there
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """One line, within ``timeout`` seconds, when nothing listens at ``HOST:PORT`` (``ray://`` too):
    Ray itself retries an unreachable cluster for minutes. ``auto`` is left to Ray."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise InputError(f"nothing answers at {address} within {timeout:g} s ({e.strerror or e}): start the cluster "
                         "there (ray start --head) or check --address") from None


def check_resources(cpus_per_run: float, gpus_per_run: float) -> None:
    """Refuse, before anything is written, a request no node of the cluster can ever grant: Ray
    would leave such a task pending forever without a word."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return
    for flag, key, want in (("--cpus-per-run", "CPU", cpus_per_run), ("--gpus-per-run", "GPU", gpus_per_run)):
        largest = max(float(n.get(key, 0)) for n in nodes)
        if want and want > largest:
            raise InputError(f"{flag} {want:g}: no node of the Ray cluster has {want:g} {key}s (the largest has "
                             f"{largest:g}); lower {flag}" + (" or run where GPUs are" if key == "GPU" else ""))


def ray_tasks(todo: Todo, cpus_per_run: float = 1, gpus_per_run: float = 0) -> Iterator[Outcome]:
    """Each run a Ray task (on an initialised Ray, see ``ray_session``) holding ``cpus_per_run``
    CPUs and ``gpus_per_run`` GPUs. A run that raises is retried in its task (``run_guarded``);
    a worker that dies is retried once by Ray (``max_retries``) and then recorded failed.

    Results travel through Ray, not through a file system: the worker makes the run in a temporary
    folder of its own node (``run_elsewhere``) and returns the folder's files; the driver writes
    them into ``--out`` atomically, as the local executors do. So no node needs to share ``--out``
    with the driver (the data, though, must be on every node; own modules travel with the job, see
    ``ray_session``). A node lost mid-sweep loses nothing: Ray makes its runs again elsewhere
    (``max_retries``; a result lost with its node is rebuilt from its task). Ctrl-C cancels what is
    left."""
    import ray

    task = ray.remote(run_elsewhere).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                                             max_retries=ATTEMPTS - 1, retry_exceptions=False)
    refs = {task.remote(_portable(config)): (config, out) for config, out in todo}
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                config, out = refs.pop(ref)
                try:
                    outcome, files = ray.get(ref)
                except ray.exceptions.RayError as e:
                    yield died(config, out, str(e).strip().splitlines()[0])
                    continue
                write_folder(Path(out), files)
                yield dataclasses.replace(outcome, config=plain(config), out=Path(out))
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise


def run_elsewhere(config: RunConfig | ResolvedRun) -> tuple[Outcome, dict[str, bytes]]:
    """On a worker of any node: the run made in a temporary folder of this node (removed after),
    and the files of its run folder (or of its failure record) to send back."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="clbench-run-"))
    try:
        out = scratch / "run"
        outcome, node = run_guarded(config, out), _node_name()
        if outcome.failed:  # say where: a node may lack what the others have (the data, a module)
            record = io.read_json(out / ERROR_FILE)
            record["node"] = node
            record["error"] = outcome.error = f"on node {record['node']}: {outcome.error}"
            io.write_json(out / ERROR_FILE, record)
        files = {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()} \
            if out.is_dir() else {}
        return dataclasses.replace(outcome, out=Path("run"), node=node), files
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _node_name() -> str:
    """This worker's node: host name, address and the start of Ray's node id (nodes of one
    machine share the first two)."""
    import socket

    try:
        import ray

        return (f"{socket.gethostname()} {ray.util.get_node_ip_address()} "
                f"{ray.get_runtime_context().get_node_id()[:8]}")
    except Exception:  # noqa: BLE001 - outside Ray, or no address to tell
        return socket.gethostname()


def write_folder(out: Path, files: dict[str, bytes]) -> None:
    """A run folder from the files a worker sent: filled beside it, then renamed into place (a
    folder is whole or absent, as ``run.record`` makes it); a failure record replaces nothing but
    itself, so a complete folder is never lost to a later failed attempt."""
    if set(files) == {ERROR_FILE}:
        out.mkdir(parents=True, exist_ok=True)
        io.atomic_write_text(out / ERROR_FILE, files[ERROR_FILE].decode())
        return
    import shutil

    staging = io.staging_dir(out)
    try:
        for name, data in files.items():
            target = (staging / name).resolve()
            if staging.resolve() not in target.parents:  # a name from the wire stays inside the folder
                raise RuntimeError(f"a worker sent a file outside its run folder: {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    io.commit_dir(staging, out)


def _portable(config: RunConfig | ResolvedRun) -> RunConfig | ResolvedRun:
    """The config with its data folder absolute: a Ray worker need not share the driver's cwd."""
    settings = plain(config)
    if settings.data_root is None:
        return config
    settings = dataclasses.replace(settings, data_root=str(Path(settings.data_root).resolve()))
    return dataclasses.replace(config, config=settings) if isinstance(config, ResolvedRun) else settings
