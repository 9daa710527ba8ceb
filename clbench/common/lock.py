"""One experiment folder, one writer: an advisory lock held for a command's life.

Two commands writing one folder would mix their settings and results (``experiment.toml`` saying one
learning rate while the runs used another) or have one ``--force`` delete what the other is making.
The lock is ``flock`` on ``.clbench.lock`` in the folder: the kernel releases it when the holder
exits in any way (SIGKILL and power loss included), so a lock left by a dead command is never in
the way and needs no cleaning; the file's text names the holder for the refusal's one line.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from clbench.common.errors import InputError

LOCK_FILE = ".clbench.lock"
_HELD: set[Path] = set()  # the folders this process holds


@contextlib.contextmanager
def folder_lock(root: Path, what: str) -> Iterator[None]:
    """Hold ``root``'s lock while the block runs (``what``: the command, for the other's refusal);
    refuse with one line when another live command holds it."""
    key = root.resolve()
    if key in _HELD:  # this process holds it already (``clbench run`` around ``run_experiment``)
        yield
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the user's to ensure there
        yield
        return
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise InputError(f"cannot lock {root}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            raise InputError(f"{root} is in use by another clbench command ({holder or 'a live process'}); wait for "
                             "it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 500, 0).decode(errors="replace").strip()
    except OSError:
        return ""
