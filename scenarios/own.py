"""Scenarios from your own data: arrays or tensors, a torchvision dataset, an image folder.

A scenario of your own runs everywhere a named one does once it is reachable by an import path:
write a function ``my_scenario(seed: int, val_fraction: float, **options) -> Scenario`` (build it
with ``from_arrays`` or ``from_datasets``) and name it ``mypkg.module:my_scenario`` in
``clbench run --scenario``, an experiment TOML or ``Experiment(scenarios=[...])``. Every process
that runs it (the local pool's, Ray's workers) imports it by that path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from clbench.common.errors import InputError
from clbench.common.imports import import_object, plugin
from clbench.scenarios.builders import split
from clbench.scenarios.data import Scenario, TensorData, seeded_generator, stratified_split

#: entry-point group of installed scenario plugins
PLUGINS = "clbench.scenarios"
#: how the runner trains on a scenario of your own unless told otherwise (``train=`` or the CLI)
DEFAULT_TRAIN = {"model": "mlp", "hidden": [400, 400], "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                 "batch_size": 32, "epochs": 1, "memory": 200, "augment": "none"}


def _images(x: Any, what: str) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` from uint8 or [0, 1] float arrays, ``[N, H, W]`` or ``[N, C, H, W]``."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"{what} must be images shaped [N, H, W] or [N, C, H, W], not {list(x.shape)}")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise InputError(f"{what} must be uint8 (0-255) or float in [0, 1], not {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise InputError(f"{what}: float images must lie in [0, 1] (found {float(x.min()):.3g}..{float(x.max()):.3g})")
    return (x * 255).round().to(torch.uint8).contiguous()


def _labels(y: Any, n: int, what: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.ndim != 1 or len(y) != n or y.is_floating_point():
        raise InputError(f"{what} must be {n} whole-number labels, not {y.dtype} shaped {list(y.shape)}")
    if len(y) and y.min() < 0:
        raise InputError(f"{what}: labels must be 0, 1, 2, ... (found {int(y.min())})")
    return y.long()


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, n_tasks: int, *, name: str = "own",
                seed: int = 0, val_fraction: float = 0.1, class_names: Sequence[str] | None = None,
                setting: str = "class-il", class_order: Any = "fixed", task_order: Any = None,
                train: dict[str, Any] | None = None) -> Scenario:
    """A split scenario (``n_tasks`` tasks of equal class count) from arrays or tensors: images
    uint8 0-255 or float 0-1, ``[N, H, W]`` or ``[N, C, H, W]``; labels 0..C-1. Batches are
    normalised with the training data's per-channel mean and std. ``val_fraction`` of every
    class's training samples (seeded) become validation data; ``train`` overrides how the runner
    trains on it (``DEFAULT_TRAIN``)."""
    xtr, xte = _images(x_train, "x_train"), _images(x_test, "x_test")
    ytr, yte = _labels(y_train, len(xtr), "y_train"), _labels(y_test, len(xte), "y_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise InputError(f"train and test images differ in shape: {list(xtr.shape[1:])} vs {list(xte.shape[1:])}")
    n_classes = int(max(ytr.max(), yte.max())) + 1 if len(ytr) else 0
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes or set(ytr.unique().tolist()) != set(range(n_classes)):
        raise InputError(f"the training labels must cover 0..{n_classes - 1}, one name per class "
                         f"(got {len(names)} names, labels {sorted(ytr.unique().tolist())[:12]})")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), not {val_fraction}")
    scaled = xtr.float().div(255)
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(s, 1e-6) for s in scaled.std(dim=(0, 2, 3)).tolist())
    train_data, val = stratified_split(TensorData(xtr, ytr, mean, std), val_fraction,
                                       seeded_generator(seed, "val-split"))
    meta = {"dataset": name, "train": {**DEFAULT_TRAIN, **(train or {})}, "source": "own data", "seed": seed,
            "val_fraction": val_fraction, "val_split": "stratified by class, seeded, carved out of the training data"}
    return split((train_data, TensorData(xte, yte, mean, std), names), n_tasks, name=name, class_order=class_order,
                 setting=setting, seed=seed, task_order=task_order, meta=meta, val=val)


def from_datasets(train: Any, test: Any, n_tasks: int, **kwargs) -> Scenario:
    """A split scenario from two map-style datasets of ``(image, label)`` pairs — a torchvision
    dataset, or ``torchvision.datasets.ImageFolder(root, transform=...)`` over a folder of class
    folders — whose images are tensors (``transforms.ToTensor()``), arrays or PIL images of one size.
    ``class_names`` default to the dataset's ``classes``; other keywords as ``from_arrays``."""
    def arrays(ds, what):
        if len(ds) == 0:
            raise InputError(f"the {what} dataset is empty")
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        xs = [np.asarray(x) for x in xs]
        if len({x.shape for x in xs}) > 1:
            raise InputError(f"the {what} images differ in size; resize them (e.g. transforms.Resize) first")
        x = np.stack(xs)
        if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # PIL/HWC -> CHW
            x = x.transpose(0, 3, 1, 2)
        return x, np.asarray(ys)

    kwargs.setdefault("class_names", getattr(train, "classes", None))
    return from_arrays(*arrays(train, "training"), *arrays(test, "test"), n_tasks, **kwargs)


def scenario_factory(name: str) -> Callable[..., Scenario]:
    """The function behind ``package.module:function``."""
    factory = import_object(name if ":" in name else (plugin(PLUGINS, name) or name), "scenario")
    if not callable(factory):
        raise InputError(f"scenario {name!r} is not a function returning a Scenario")
    return factory


def build_own(name: str, seed: int, val_fraction: float, **options) -> Scenario:
    """Call ``package.module:function(seed=..., val_fraction=..., **options)``; it must return a Scenario."""
    try:
        scenario = scenario_factory(name)(seed=seed, val_fraction=val_fraction, **options)
    except TypeError as e:
        raise InputError(f"scenario {name}: {e}") from None
    if not isinstance(scenario, Scenario):
        raise InputError(f"scenario {name} returned {type(scenario).__name__}, not a clbench.scenarios.Scenario")
    return scenario
