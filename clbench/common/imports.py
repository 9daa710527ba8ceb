"""Objects named by an import path, ``package.module:name``: how a scenario or a strategy of your
own reaches every process that runs it (the pool's and Ray's workers import it the same way)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from clbench.common.errors import InputError


def import_object(path: str, what: str) -> Any:
    """``package.module:name``, looked up first where Python looks, then in the current folder
    (a console script's ``sys.path`` lacks it, while ``python -m`` has it: a module beside the
    experiment works either way)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise InputError(f"{what} {path!r} is not an import path: write package.module:name")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name.split(".")[0] or not _add_cwd():
                raise
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot import {what} {path!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's module raised on import: its error, in one line
        first = f"{type(e).__name__}: {e}".strip().splitlines()[0]
        raise InputError(f"importing {what} {path!r} raised {first} (run python -c 'import {module_name}' to "
                         "see where)") from None


def _add_cwd() -> bool:
    """Put the current folder last on ``sys.path`` (a module beside the experiment); False when it
    is there already."""
    if os.getcwd() in sys.path:
        return False
    sys.path.append(os.getcwd())
    return True


def plugin(group: str, name: str) -> str | None:
    """The import path an installed package declares for ``name`` in the entry-point ``group``
    (``clbench.strategies`` or ``clbench.scenarios``), e.g. in its pyproject.toml::

        [project.entry-points."clbench.strategies"]
        my-strategy = "mypkg.module:MyStrategy"
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.value
    return None


def plugin_names(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return [ep.name for ep in entry_points(group=group)]


def own_modules(names: Iterable[str]) -> list[str]:
    """The files or folders of the user's own top-level modules among ``names`` (scenario and strategy
    names; import paths ``package.module:name`` name one): those not installed where Python keeps
    packages, so a worker on another machine may lack them (``executors.ray_session`` ships them).
    A module that cannot be found is left out: importing it fails with its own message."""
    import importlib.util
    import sysconfig
    from pathlib import Path

    installed = {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))}
    found: dict[str, None] = {}
    for name in names:
        module_name, sep, _ = name.partition(":")
        top = module_name.split(".")[0]
        if not sep or not top or top == "clbench":
            continue
        _add_cwd()  # as import_object finds it
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        path = Path(spec.origin).resolve()
        path = path.parent if path.name == "__init__.py" else path
        if not any(folder == path or folder in path.parents for folder in installed):
            found[str(path)] = None
    return list(found)
