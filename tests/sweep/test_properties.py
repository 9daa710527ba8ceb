"""Property-based tests (Hypothesis): generated experiments, as TOML files and as command lines.
Valid ones run (tiny) and write a complete experiment; invalid ones (one field spoiled) give one
line on stderr, exit 2, and write nothing."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clbench.cli import entry

STRATEGIES = ["finetune", "er", "ewc", "gem", "nmc", "joint", "vb-er"]

valid_settings = st.fixed_dictionaries({
    "strategies": st.lists(st.sampled_from(STRATEGIES), min_size=1, max_size=2, unique=True),
    "seeds": st.lists(st.integers(0, 9), min_size=1, max_size=2, unique=True),
    "iterations": st.integers(1, 3),
    "batch_size": st.sampled_from([8, 16]),
    "eval_every": st.integers(1, 4),
    "eval_subset": st.one_of(st.integers(1, 12), st.just("all")),
    "lr": st.floats(1e-4, 0.2),
    "memory": st.integers(10, 60),
    "val_fraction": st.sampled_from([0.0, 0.1, 0.25]),
    "augment": st.sampled_from(["none", "weak"]),
    "dense_after_switch": st.integers(0, 3),
    "eval_schedule": st.sampled_from(["refine", "periodic"]),
}).map(lambda v: {**v, "dense_after_switch": 0} if v["eval_schedule"] == "refine" else v)  # periodic's option

NAN, INF = float("nan"), float("inf")
#: per field, values that must be refused (wrong type, out of range, not finite, unknown name)
BAD_VALUES = {
    "strategies": [[], ["icarl"], "finetune", [3], ["er", "er"]],
    # TOML has types: a bool is not a seed nor a number, a string is not a real
    "seeds": ["abc", [-1], [], [0, 0], 3.5, ["x"], [True], [2**32], [2**64]],
    "iterations": [0, -3, "one", 2.5, True],
    "epochs": [0, -1.0, "one", NAN, INF, True, "1"],
    "batch_size": [0, -1, "big", 1.5],
    "eval_every": [0, -2, "x"],
    "eval_subset": [0, -5, "some", 2.5],
    "lr": [0, -1, "big", NAN, INF, "0.1", False],
    "momentum": [1.0, -0.5, NAN],
    "memory": [-1, "lots", 1.5],
    "val_fraction": [1.0, -0.1, 2, "half", NAN],
    "augment": ["heavy", 3],
    "dense_after_switch": [-1, "x"],
    "threads": [0, -1, "many"],
    "orderings": [0, -1],
    "eval_precision": ["fp8"],
    "eval_schedule": ["sometimes"],
    "eval_on": ["train"],
    "optimizer": ["rmsprop"],
    "model": ["transformer"],
    "ordering": ["shuffled"],
    "params": [3, {"finetune": 3}, {"*": {"mem_size": -1}}, {"*": {"ewc_lambda": NAN}}, {"*": {"nope": 1}}],
    "scenario_options": [3, {"n_tasks": 0}, {"n_tasks": 3}, {"class_order": 7}, {"setting": "any-il"}],
    "name": ["", "a/b", ".."],
    "model_options": [3, {"hidden": [-5]}, {"hidden": "abc"}, {"width": 0}, {"hidden": [0, 10]}],
}

#: per command-line option, values that must be refused
BAD_OPTIONS = {
    "--seeds": ["abc", "-1", "0,0", "3-1", "", "18446744073709551616", "0-99999999999"],
    "--seed": ["-1", "x"],
    "--iterations": ["0", "-3", "one"],
    "--epochs": ["0", "nan", "inf", "-2"],
    "--batch-size": ["0", "-1", "big"],
    "--eval-every": ["0", "x"],
    "--eval-subset": ["0", "some", "-4"],
    "--lr": ["0", "-1", "big", "nan", "inf"],
    "--memory": ["-1", "lots"],
    "--val-fraction": ["1", "-0.1", "nan"],
    "--augment": ["heavy"],
    "--threads": ["0"],
    "--jobs": ["0", "-2"],
    "--n-tasks": ["0", "3", "-1"],
    "--class-order": ["0,1,x", "0,1", "sometimes"],
    "--param": ["ewc_lambda=nan", "mem_size=-1", "replay_batch=0", "nope=1", "gem.memory_strength=inf"],
    "--scenario": ["split-nothing"],
    "--strategy": ["icarl", "finetune,finetune", ":"],
    "--setting": ["any-il"],
    "--eval-precision": ["fp8"],
    "--orderings": ["0"],
}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + "}"


def to_toml(values: dict) -> str:
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())


def to_args(values: dict) -> list[str]:
    args = []
    for k, v in values.items():
        flag = {"strategies": "--strategy", "seeds": "--seeds"}.get(k, "--" + k.replace("_", "-"))
        args += [flag, ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    return args


def invoke(capsys, args: list[str]) -> tuple[int, str]:
    code = entry(args)
    return code, capsys.readouterr().err


#: CI draws the same examples every time (a gate must not be flaky); ``CLBENCH_EXPLORE=K`` draws K
#: times as many fresh random ones, to hunt for new failures while developing
EXPLORE = int(os.environ.get("CLBENCH_EXPLORE", "0"))


def property_test(examples: int) -> settings:
    return settings(max_examples=examples * max(EXPLORE, 1), deadline=None, derandomize=not EXPLORE,
                    database=None if not EXPLORE else settings.default.database, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@property_test(8)
@given(values=valid_settings, form=st.sampled_from(["toml", "cli"]))
def test_valid_experiments_run(capsys, values, form):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if form == "toml":
            (Path(tmp) / "e.toml").write_text(to_toml(values))
            args = ["--config", str(Path(tmp) / "e.toml")]
        else:
            args = to_args(values)
        code, err = invoke(capsys, ["run", *args, "--jobs", "1", "--out", str(out), "--quiet", "--no-plots"])
        assert code == 0, err
        lb = pd.read_csv(out / "leaderboard.csv")
        assert sorted(lb["strategy"]) == sorted(values["strategies"])
        assert (lb["n_seeds"] == len(values["seeds"])).all()
        assert len(list(out.glob("runs/*/*/seed*/curves.csv"))) == len(values["strategies"]) * len(values["seeds"])


@st.composite
def spoiled_settings(draw):
    values = draw(valid_settings)
    field = draw(st.sampled_from(sorted(BAD_VALUES)))
    values[field] = draw(st.sampled_from(BAD_VALUES[field]))
    return values


def _refused(code: int, err: str, out: Path) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("clbench: error: ")
    assert not out.exists()


@property_test(60)
@given(values=spoiled_settings())
def test_invalid_toml_is_one_line_and_writes_nothing(capsys, values):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        (Path(tmp) / "e.toml").write_text(to_toml(values))
        code, err = invoke(capsys, ["run", "--config", str(Path(tmp) / "e.toml"), "--out", str(out), "--quiet",
                                    "--no-plots"])
        _refused(code, err, out)


@property_test(60)
@given(values=valid_settings, option=st.sampled_from(sorted(BAD_OPTIONS)), data=st.data())
def test_invalid_command_lines_are_one_line_and_write_nothing(capsys, values, option, data):
    bad = data.draw(st.sampled_from(BAD_OPTIONS[option]))
    args = to_args(values)
    if option in ("--strategy", "--seeds", "--seed"):  # replace what the valid part says
        drop = {"--strategy"} if option == "--strategy" else {"--seeds"}
        args = [a for i, a in enumerate(args) if a not in drop and not (i and args[i - 1] in drop)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        code, err = invoke(capsys, ["run", *args, option, bad, "--out", str(out), "--quiet", "--no-plots"])
        _refused(code, err, out)


@given(st.text(min_size=1, max_size=40))
def test_no_text_becomes_a_path_outside_its_parent(text):
    """A scenario, strategy or parameter value, whatever it holds, is one folder name inside its parent,
    and two different texts never share one."""
    from clbench.common.io import path_segment

    segment = path_segment(text)
    assert "/" not in segment and "\\" not in segment and "\0" not in segment and not segment.startswith(".")
    assert segment not in ("", ".", "..")
    root = Path("/exp")
    assert (root / segment).parent == root
    other = text + "/"
    assert path_segment(other) != segment
