"""The README runs as written: every `clbench` command in its shell blocks that needs no data
from elsewhere (a cluster, MNIST or CIFAR files, timm) is run in order, in one folder, through
the console script, with flags appended that make it tiny (the last value of a flag wins)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scenarios.sources import DATASETS

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
#: what a command may need that CI does not have
NEEDS_ELSEWHERE = ("--address", "--data-root", "split-cifar10", "split-mnist", "permuted-mnist", "rotated-mnist")


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
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


def test_the_readme_has_the_commands_this_test_expects():
    commands = readme_commands()
    assert len(commands) >= 15
    assert any(c.startswith("clbench tune") for c in commands) and any("--executor ray" in c for c in commands)


def test_every_readme_command_runs(tmp_path):
    own = re.search(r"<!-- own-data -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "my_data.py").write_text(own)
    script = Path(sys.executable).with_name("clbench")
    fmnist = DATASETS["fashion-mnist"].available()
    ran = []
    for command in readme_commands():
        if any(n in command for n in NEEDS_ELSEWHERE) or ("fmnist" in command and not fmnist):
            continue
        done = subprocess.run([str(script), *tiny(command)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        ran.append(command)
    assert len(ran) >= 13, ran
    assert (tmp_path / "results/merged/leaderboard.csv").is_file()
    assert (tmp_path / "results/er-mem500/leaderboard.tex").read_text().startswith("\\begin{tabular}")
