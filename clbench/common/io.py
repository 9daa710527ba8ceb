"""Atomic writes: a file (or a whole run folder) appears complete or not at all, so an
interrupted run never leaves a half-written CSV that a report would read as complete."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

#: what a complete run folder holds (``clbench.run.record.write_run`` writes them all, then renames the folder)
RUN_FILES = ("config.json", "curves.csv", "matrix.csv", "train.csv", "summary.json")
#: the file a failed run leaves in its (otherwise empty, hence incomplete) run folder
ERROR_FILE = "error.json"


def is_complete(run_dir: Path) -> bool:
    return all((run_dir / f).is_file() for f in RUN_FILES)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a temporary sibling, then rename it over ``path``. The file gets the permissions
    an ordinary ``open`` would (0666 less the umask), not ``mkstemp``'s private 0600, so results
    can be shared as the user's umask says."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """JSON with NaN written as null (valid JSON for every reader)."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, df: pd.DataFrame, exact: bool = False) -> None:
    """10 significant digits (results); ``exact`` writes floats that read back bit for bit (chosen
    hyperparameters, which name run folders and must not change on the way through a file)."""
    atomic_write_text(path, df.to_csv(index=False, float_format=None if exact else "%.10g"))


def staging_dir(final: Path) -> Path:
    """A fresh temporary sibling of ``final`` to fill before ``commit_dir``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700, widened to what mkdir would give
    return staging


def commit_dir(staging: Path, final: Path) -> None:
    """Replace ``final`` by the filled ``staging`` folder (rename: atomic on one file system)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def path_segment(text: str, portable: bool = False) -> str:
    """``text`` as one folder name that stays inside its parent whatever it holds: a parameter
    value such as ``checkpoint:../../x`` never becomes a path (``/``, ``\\``, ``%`` and NUL are
    %-escaped, and a leading ``.`` so that ``..`` and hidden names cannot arise). ``portable``
    also escapes what Windows and macOS refuse or show oddly in a file name (``:<>"|?*``): for
    files people copy elsewhere, the plots."""
    unsafe = "/\\%\0" + (':<>"|?*' if portable else "")
    out = "".join(f"%{ord(c):02X}" if c in unsafe else c for c in text)
    return "%2E" + out[1:] if out.startswith(".") else out
