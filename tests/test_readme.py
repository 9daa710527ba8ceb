"""The README runs as written: every `clbench` command in its shell blocks that needs no data
from elsewhere (a cluster, MNIST or CIFAR files, timm) is run through the console script, with
flags appended that make it tiny (the last value of a flag wins). A command runs in one folder
after the commands whose results it reads (``results/NAME`` of an earlier ``--name NAME``), in
README order; unrelated commands are separate test cases, so they can run in parallel."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clbench.scenarios.sources import DATASETS

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
#: what a command may need that CI does not have
NEEDS_ELSEWHERE = ("--address", "--data-root", "split-cifar10", "split-mnist", "permuted-mnist", "rotated-mnist")


#: put before a README block whose example says it shows divergence (its text says where)
SHOWS_DIVERGENCE = "<!-- shows-divergence -->"


def readme_commands(showing_divergence: bool | None = None) -> list[str]:
    """The README's clbench commands (only those of blocks marked ``SHOWS_DIVERGENCE``, or only
    the others, when asked)."""
    text = README.read_text()
    commands = []
    for mark, block in re.findall(rf"({re.escape(SHOWS_DIVERGENCE)}\s*)?```bash\n(.*?)```", text, re.S):
        if showing_divergence is not None and bool(mark) != showing_divergence:
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("clbench "):
                commands.append(line)
    return commands


def tiny(command: str) -> list[str]:
    args = shlex.split(command)[1:]
    if args[0] == "run" and "--config" not in args:
        per_task = "30" if "--ordering" in args else "2"  # a fuzzy boundary needs room
        args += ["--iterations", per_task, "--eval-every", "2", "--eval-subset", "10", "--quiet"]
        args += [] if "--seed" in args else ["--seeds", "0"]
    elif args[0] == "run":
        args += ["--quiet", "--no-plots"]
    elif args[0] == "tune":
        args += ["--iterations", "2", "--eval-every", "2", "--eval-subset", "10", "--seeds", "0", "--samples", "2",
                 "--quiet", "--no-plots"]
    return args


def runnable() -> list[str]:
    """The README's commands this machine can run, in README order."""
    fmnist = DATASETS["fashion-mnist"].available()
    return [c for c in readme_commands()
            if not any(n in c for n in NEEDS_ELSEWHERE) and ("fmnist" not in c or fmnist)]


def chains(commands: list[str]) -> list[list[str]]:
    """The commands in groups that run in one folder, in order: a command joins the groups of
    the commands whose ``results/NAME`` it reads (all earlier ones when no ``--name NAME`` or
    ``--out results/NAME`` made it, to be safe)."""
    named, made = {}, []  # the first command that makes each results/NAME; what each command makes
    for i, c in enumerate(commands):
        made.append(set(re.findall(r"--name\s+(\S+)", c)) | set(re.findall(r"--out\s+results/([\w.-]+)", c)))
        for name in made[-1]:
            named.setdefault(name, i)
    group = list(range(len(commands)))  # union-find over command indices

    def find(i):
        while group[i] != i:
            i = group[i]
        return i

    for i, c in enumerate(commands):
        for name in set(re.findall(r"results/([\w.-]+)", c)) - made[i]:
            for j in ([named[name]] if named.get(name, i) < i else range(i)):
                group[find(j)] = find(i)
    out: dict[int, list[str]] = {}
    for i, c in enumerate(commands):
        out.setdefault(find(i), []).append(c)
    return list(out.values())


def test_the_readme_has_the_commands_this_test_expects():
    commands = readme_commands()
    # the one example that shows divergence on purpose: the tuning whose choice does not carry over
    assert [c.split(" --")[0] for c in readme_commands(showing_divergence=True)] == ["clbench tune"]
    assert len(commands) >= 15
    assert any(c.startswith("clbench tune") for c in commands) and any("--executor ray" in c for c in commands)
    assert len(runnable()) >= 13 if DATASETS["fashion-mnist"].available() else len(runnable()) >= 10
    groups = chains(runnable())
    merged = next(g for g in groups if any("--out results/merged" in c for c in g))
    assert [c for c in merged if "--name" in c][:2] == [c for c in runnable() if "--name er-mem500" in c
                                                        or "--name ewc-task-il" in c]
    assert len(groups) >= 8  # independent commands are separate cases


@pytest.mark.parametrize("commands", chains(runnable()), ids=lambda g: re.sub(r"\W+", "-", g[0][8:48]).strip("-"))
def test_every_readme_command_runs(commands, tmp_path):
    own = re.search(r"<!-- own-data -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "my_data.py").write_text(own)
    script = Path(sys.executable).with_name("clbench")
    diverging = readme_commands(showing_divergence=True)
    for command in commands:
        done = subprocess.run([str(script), *tiny(command)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        # no example diverges unless it says it shows divergence
        if command not in diverging:
            assert "DIVERGED" not in done.stdout, f"{command}\n{done.stdout[-2000:]}"
    if not set(commands) & set(diverging):
        for board in tmp_path.glob("results/**/leaderboard.csv"):
            assert pd.read_csv(board)["n_diverged"].eq(0).all(), board
    if any("--out results/merged" in c for c in commands):
        assert (tmp_path / "results/merged/leaderboard.csv").is_file()
        tex = (tmp_path / "results/er-mem500/leaderboard.tex").read_text()
        assert tex.startswith("\\begin{table}") and "\\begin{tabular}" in tex and "\\caption{" in tex


def test_the_own_loop_example_is_deterministic_and_its_metrics_are_measured(tmp_path):
    """The README's own-loop example, run as written, twice: the same line both times (the seed is set before the
    model is built), and every metric it prints measured (a loop that skipped the evaluations at task
    ends would print nan forgetting)."""
    import subprocess
    import sys

    code = re.search(r"<!-- user-loop -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                           timeout=300).stdout for _ in range(2)]
    assert outs[0] == outs[1] and "nan" not in outs[0]
    acc = float(re.search(r"ACC ([0-9.]+)", outs[0]).group(1))
    assert acc > 0.9  # task-IL on digits, well above chance (0.5)
