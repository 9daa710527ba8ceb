"""The papers' experimental settings, shipped as experiment TOML files runnable by name
(``clbench run --preset NAME``; flags still override).

Each file is an ordinary experiment (the keys of ``--config``) plus a ``[preset]`` table: the
paper, its code, the data it needs, the settings in words, notes, and ``[[preset.published]]``
rows, the numbers the paper (or a named reproduction) reports for a (scenario, strategy, metric),
which ``leaderboard.md`` sets beside ours when an experiment was run from the preset. Published
numbers are transcribed from the papers (each row's ``source`` says from where, and whether it is
a reproduction's or unverified); a preset never holds a number of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from clbench.common.errors import InputError

FOLDER = Path(__file__).parent
#: the metrics a published number can be (the leaderboard's columns of the same name)
METRICS = ("acc", "bwt", "fwt", "min_acc", "wc_acc")


@dataclass(frozen=True)
class Published:
    """A number a paper reports: on a 0-1 scale, like the leaderboard's accuracies."""

    scenario: str
    strategy: str
    metric: str
    value: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    experiment: dict[str, Any]
    paper: str
    code: str
    data: str
    settings: str
    notes: str = ""
    published: tuple[Published, ...] = field(default=())


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.toml"))


def load(name: str) -> Preset:
    """The preset ``name``; an unknown name is a one-line error listing the known ones."""
    path = FOLDER / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}; known presets: {', '.join(names())} (clbench list presets)")
    data = tomllib.loads(path.read_text())
    meta = dict(data.pop("preset"))
    rows = tuple(Published(**row) for row in meta.pop("published", []))
    for row in rows:
        if row.metric not in METRICS:
            raise ValueError(f"preset {name}: published metric {row.metric!r} is not one of {', '.join(METRICS)}")
    return Preset(name=name, experiment={**data, "preset": name}, published=rows, **meta)


def missing_data(preset: Preset, scenarios: list[str] | None = None, root: str | None = None) -> str | None:
    """None when the data of every scenario (the preset's, or ``scenarios``) is here (under ``root``
    if given), else one line saying which files to put where."""
    from clbench.scenarios.registry import is_own, scenario_spec
    from clbench.scenarios.sources import dataset_info

    for scenario in scenarios or preset.experiment.get("scenarios", []):
        if is_own(scenario):
            continue
        why = dataset_info(scenario_spec(scenario).dataset).missing(root or preset.experiment.get("data_root"))
        if why:
            return f"preset {preset.name} needs {preset.data}. {why}"
    return None


def published_for(preset_name: str | None) -> dict[tuple[str, str, str], Published]:
    """``(scenario, strategy label, metric) -> Published`` of an experiment's preset (empty without one)."""
    if not preset_name or preset_name not in names():
        return {}
    return {(p.scenario, p.strategy, p.metric): p for p in load(preset_name).published}
