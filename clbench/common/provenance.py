"""Which code produced a result: the clbench version and, when clbench runs from a git checkout,
its commit (and whether the working tree differed from it), recorded in every run's config.json."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from clbench import __version__


@functools.cache
def provenance() -> dict[str, Any]:
    """``{"clbench": version, "commit": sha or None, "dirty": bool or None}`` (looked up once per process)."""
    source = Path(__file__).resolve().parents[1]
    commit = dirty = None
    try:
        commit = _git(source, "rev-parse", "HEAD")
        dirty = bool(_git(source, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout (an installed wheel), or no git here
    return {"clbench": __version__, "commit": commit, "dirty": dirty}


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()
