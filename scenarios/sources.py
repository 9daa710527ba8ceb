"""Where the real datasets come from, and how they become ``TensorData``.

Every loader returns ``(train, test, class_names)`` with uint8 images. Nothing downloads
unless the caller passes ``download=True``; a dataset that is not here gives one sentence on
what to install or where to put which files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clbench.common.errors import InputError
from clbench.scenarios.data import TensorData, stratified_split
from clbench.scenarios.readers import read_cifar_pickle, read_idx

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def default_cache() -> Path:
    """The torchvision-layout cache: ``$TORCH_HOME/datasets`` (``~/.cache/torch/datasets``)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "datasets"


def candidate_roots(root: str | Path | None) -> list[Path]:
    """An explicit root wins; then ``$CLBENCH_DATA``; then the default torchvision cache."""
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get("CLBENCH_DATA"):
        roots.append(Path(os.environ["CLBENCH_DATA"]))
    roots.append(default_cache())
    return roots


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    n_classes: int
    input_shape: tuple[int, int, int]
    loader: Callable[[str | Path | None, bool], tuple[TensorData, TensorData, list[str]]]
    how_to_get: str

    def available(self, root: str | Path | None = None) -> bool:
        """True when the files are here (nothing is read beyond locating them)."""
        return self.missing(root) is None

    def missing(self, root: str | Path | None = None) -> str | None:
        """None when the files are here, else one line saying which files to put where."""
        try:
            _locate(self.name, root)
            return None
        except InputError as e:
            return str(e)


# ---------------------------------------------------------------- digits (offline default)

def digits_file() -> Path:
    """The digits CSV inside the installed scikit-learn, located without importing scikit-learn
    (its import costs more than a second per process, most of a short run's start)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0] if folders else "") / "datasets" / "data" / "digits.csv.gz"
    if not folders or not path.is_file():
        raise InputError("the digits ship inside scikit-learn, which is not installed: pip install scikit-learn")
    return path


def load_digits(root=None, download=False):
    """scikit-learn's 8x8 digits: 1,797 images shipped inside scikit-learn (pixel values 0-16, rescaled
    to 0-255), a fixed stratified 80/20 split (``stratified_split`` with seed 0)."""
    data = np.loadtxt(digits_file(), delimiter=",", dtype=np.float64)
    x = torch.from_numpy(np.rint(data[:, :-1] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8))
    y = torch.from_numpy(data[:, -1].astype(np.int64))
    train, test = stratified_split(TensorData(x, y), 0.2, torch.Generator().manual_seed(0))
    mean = float(train.x.float().mean() / 255.0)
    std = float(train.x.float().std(unbiased=False) / 255.0)
    with_stats = lambda d: TensorData(d.x, d.y, (mean,), (std,))  # noqa: E731
    return with_stats(train), with_stats(test), [str(c) for c in range(10)]


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)

_IDX_DIRS = {"mnist": ["MNIST/raw", "mnist"], "fashion-mnist": ["FashionMNIST/raw", "fashion-mnist"]}


def _find_idx_dir(name: str, root) -> Path | None:
    roots = candidate_roots(root)
    if name == "fashion-mnist" and root is None:
        roots.append(FASHION_MNIST_DEBIAN)
    for r in roots:
        for sub in ["", *_IDX_DIRS[name]]:
            d = r / sub if sub else r
            if all(_idx_file(d, f) is not None for f in IDX_FILES.values()):
                return d
    return None


def _idx_file(directory: Path, stem: str) -> Path | None:
    for suffix in ("", ".gz"):
        p = directory / (stem + suffix)
        if p.is_file():
            return p
    return None


def _load_idx_dataset(name: str, root, download: bool, mean: float, std: float, class_names: list[str]):
    d = _find_idx_dir(name, root)
    if d is None and download:
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        target = Path(root) if root is not None else default_cache()
        cls(str(target), train=True, download=True)
        cls(str(target), train=False, download=True)
        d = _find_idx_dir(name, root if root is not None else target)
    if d is None:
        raise InputError(_missing_message(name, root))
    arrays = {k: read_idx(_idx_file(d, f)) for k, f in IDX_FILES.items()}
    for split in ("train", "test"):
        xs, ys = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise InputError(f"the {name} {split} files in {d} do not match: images {xs.shape}, labels {ys.shape}")
    make = lambda s: TensorData(torch.from_numpy(arrays[f"{s}_x"].copy()).unsqueeze(1),  # noqa: E731
                                torch.from_numpy(arrays[f"{s}_y"].astype(np.int64)), (mean,), (std,))
    return make("train"), make("test"), class_names


def load_mnist(root=None, download=False):
    return _load_idx_dataset("mnist", root, download, 0.1307, 0.3081, [str(c) for c in range(10)])


def load_fashion_mnist(root=None, download=False):
    return _load_idx_dataset("fashion-mnist", root, download, 0.2860, 0.3530, FASHION_CLASSES)


# ---------------------------------------------------------------- CIFAR-100 (python pickles)

@dataclass(frozen=True)
class CifarLayout:
    """Where the official python version keeps a CIFAR dataset and what its pickles call things."""

    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels: str
    names: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR = {
    "cifar100": CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names",
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cifar10": CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                           "batches.meta", "labels", "label_names", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def _find_cifar_dir(name: str, root) -> Path | None:
    layout = CIFAR[name]
    for r in candidate_roots(root):
        for d in (r / layout.folder, r):
            if all((d / f).is_file() for f in (*layout.train, layout.test, layout.meta)):
                return d
    return None


def _load_cifar(name: str, root, download: bool):
    """A CIFAR dataset from the official python pickles (CIFAR-100: fine labels)."""
    layout = CIFAR[name]
    d = _find_cifar_dir(name, root)
    if d is None and download:
        import torchvision

        target = Path(root) if root is not None else default_cache()
        getattr(torchvision.datasets, name.upper())(str(target), train=True, download=True)
        d = _find_cifar_dir(name, target)
    if d is None:
        raise InputError(_missing_message(name, root))
    meta = read_cifar_pickle(d / layout.meta, (layout.names,))
    out = []
    for files in (layout.train, (layout.test,)):
        parts = [read_cifar_pickle(d / f, ("data", layout.labels)) for f in files]
        data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])
        labels = np.concatenate([np.asarray(p[layout.labels], dtype=np.int64) for p in parts])
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise InputError(f"{d / files[0]} is not a {name.upper()} pickle: data has shape {data.shape}, "
                             f"{len(labels)} labels (expected N x 3072 and N labels)")
        out.append(TensorData(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels),
                              layout.mean, layout.std))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names]]
    return out[0], out[1], names


def load_cifar100(root=None, download=False):
    """CIFAR-100 from the official python pickles (``cifar-100-python/{train,test,meta}``), fine labels."""
    return _load_cifar("cifar100", root, download)


def load_cifar10(root=None, download=False):
    """CIFAR-10 from the official python pickles (``cifar-10-batches-py/data_batch_1..5, test_batch,
    batches.meta``)."""
    return _load_cifar("cifar10", root, download)


# ---------------------------------------------------------------- registry of datasets

def _missing_message(name: str, root) -> str:
    where = f"in {root}" if root is not None else "in $CLBENCH_DATA or " + str(default_cache())
    if name == "fashion-mnist":
        return ("Fashion-MNIST is not installed: run `apt-get install dataset-fashion-mnist` (files land in "
                f"{FASHION_MNIST_DEBIAN}) or put the four IDX files (train-images-idx3-ubyte[.gz], "
                f"train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) {where}")
    if name == "mnist":
        return ("MNIST is not here: put the four IDX files (train-images-idx3-ubyte[.gz], "
                f"train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) {where} "
                "(or MNIST/raw/ below it, the torchvision layout), or allow a download where a network exists")
    layout = CIFAR[name]
    return (f"{name.upper().replace('CIFAR', 'CIFAR-')} is not here: put the folder {layout.folder}/ (files "
            f"{', '.join((*layout.train, layout.test, layout.meta))} from the official python version) {where}, "
            "or allow a download where a network exists")


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, (1, 8, 8), load_digits, "ships with scikit-learn"),
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), load_mnist, "IDX files"),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, (1, 28, 28), load_fashion_mnist,
                                 "apt-get install dataset-fashion-mnist"),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), load_cifar100, "cifar-100-python pickles"),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), load_cifar10, "cifar-10-batches-py pickles"),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def _locate(name: str, root) -> Path | None:
    if name == "digits":
        return None
    found = _find_cifar_dir(name, root) if name in CIFAR else _find_idx_dir(name, root)
    if found is None:
        raise InputError(_missing_message(name, root))
    return found


def load_dataset(name: str, root: str | Path | None = None, download: bool = False):
    """``(train, test, class_names)`` of a named dataset; cached per process (the data is read-only)."""
    info = dataset_info(name)
    return _cached_load(info.name, str(root) if root is not None else None, download,
                        os.environ.get("CLBENCH_DATA"), os.environ.get("TORCH_HOME"))


@functools.lru_cache(maxsize=4)
def _cached_load(name: str, root: str | None, download: bool, _env_data: str | None, _env_torch: str | None):
    """The environment variables are part of the key: they change where ``root=None`` resolves."""
    info = DATASETS[name]
    train, test, names = info.loader(root, download)
    for split, data in (("training", train), ("test", test)):
        check_dataset(info, split, data)
    return train, test, names


def check_dataset(info: DatasetInfo, split: str, data: TensorData) -> None:
    """Images of the dataset's shape and labels in its range, checked once at load: files of
    another dataset (32x32 images under MNIST's names) or with stray labels would otherwise fail
    mid-run or train on nonsense."""
    shape = tuple(data.x.shape[1:])
    if shape != info.input_shape:
        raise InputError(f"the {info.name} {split} images have shape {shape}, not {info.input_shape} "
                         f"(channels, height, width): these are not {info.name} files")
    if len(data.y):
        lo, hi = int(data.y.min()), int(data.y.max())
        if lo < 0 or hi >= info.n_classes:
            raise InputError(f"the {info.name} {split} labels run from {lo} to {hi}, outside 0..{info.n_classes - 1}: "
                             "the label file is corrupt or belongs to another dataset")
