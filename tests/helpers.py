"""What many tests share: the command line in this process, the flags of a tiny run, and small files
in the real on-disk formats (IDX, CIFAR pickles) or a separable toy dataset. Fixtures live in
``conftest.py``; everything here is a plain function to import."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from clbench.cli import entry
from clbench.scenarios.data import TensorData
from clbench.scenarios.readers import write_idx


def tiny(strategy: str | None = "finetune", seeds: str | None = "0", iterations: int = 3, eval_every: int = 3,
         eval_subset: int = 10, *extra: str) -> list[str]:
    """The flags of a run small enough for a unit test (no progress bars, no plots)."""
    flags = [*(["--strategy", strategy] if strategy else []), *(["--seeds", seeds] if seeds else []),
             "--iterations", str(iterations), "--eval-every", str(eval_every), "--eval-subset", str(eval_subset)]
    return [*flags, *extra, "--quiet", "--no-plots"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def clbench(*args, cwd=None) -> Result:
    """The command line in this process, through ``entry`` (all the console script does: exit
    codes, one-line errors; a traceback fails the test), its output captured. It saves the
    interpreter and torch start of a fresh process (about 6 s each); the tests that need a fresh
    process (the console script itself, installed plugins, a data module in the working folder)
    start one."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = entry([str(a) for a in args])
    finally:
        os.chdir(here)
    return Result(code, out.getvalue(), err.getvalue())


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process, through pytest's capture: exit code, stdout, stderr."""
    code = entry([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def make_idx_dataset(folder, n_train=60, n_test=30, side=28, gz=True, seed=0):
    """Four IDX files (MNIST layout), labels 0..9 in turn; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)
        out[split] = (x, y)
    return out


def make_cifar10(folder, per_batch=20, n_test=30, seed=0):
    """The official python layout: five training batches, a test batch, batches.meta."""
    rng = np.random.default_rng(seed)
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], []), "test": ([], [])}
    for name, n, split in [*((f"data_batch_{i}", per_batch, "train") for i in range(1, 6)),
                           ("test_batch", n_test, "test")]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        out[split][0].append(data)
        out[split][1].extend(labels)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"k{i}".encode() for i in range(10)]}, f)
    return {k: (np.concatenate(v[0]), v[1]) for k, v in out.items()}


def make_cifar100(folder, n_train=200, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    d = folder / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [i % 100 for i in range(n)]
        with open(d / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * n}, f)
        out[split] = (data, labels)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    return out


def synthetic_dataset(n_classes=4, per_class=30, side=8, seed=0, test_per_class=10):
    """A separable toy dataset: class c is a bright square at position c."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n_classes).repeat_interleave(n)
        x = torch.randint(0, 40, (len(y), 1, side, side), generator=g, dtype=torch.uint8)
        for c in range(n_classes):
            r, col = divmod(c, side // 2)
            x[y == c, 0, 2 * r:2 * r + 2, 2 * col:2 * col + 2] = 250
        return TensorData(x, y, (0.1,), (0.3,))

    return make(per_class), make(test_per_class), [str(c) for c in range(n_classes)]


class RunsAShellCommand:
    """What an attacker leaves in a data folder or a checkpoint: unpickling it runs ``touch marker``
    (through os.system), so a test sees whether a loader ran code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)
