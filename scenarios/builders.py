"""Scenario builders: a dataset becomes a sequence of tasks.

All randomness (class order, task order, permutations) is drawn from the seed through a
local ``torch.Generator``, so the same seed gives the same scenario in every process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from clbench.common.errors import InputError
from clbench.scenarios.data import SETTINGS, Scenario, Task, TensorData, seeded_generator


def resolve_class_order(class_order, n_classes: int, seed: int) -> list[int]:
    """``fixed`` (0..C-1), ``seed`` (a permutation drawn from the seed; van de Ven's code does this for every
    seed but 0 — here it is explicit) or an explicit list holding every class once."""
    if class_order in (None, "fixed"):
        return list(range(n_classes))
    if class_order == "seed":
        return torch.randperm(n_classes, generator=seeded_generator(seed, "class-order")).tolist()
    if isinstance(class_order, str):
        raise InputError(f"class_order must be 'fixed', 'seed' or a list of classes, not {class_order!r}")
    order = [int(c) for c in class_order]
    if sorted(order) != list(range(n_classes)):
        raise InputError(f"class_order must list each of the {n_classes} classes exactly once, got {order}")
    return order


def _check_setting(setting: str) -> None:
    if setting not in SETTINGS:
        raise InputError(f"unknown setting {setting!r}; known settings: {', '.join(SETTINGS)}")


def _task_order(n_tasks: int, task_order, seed: int) -> list[int]:
    if task_order in (None, "fixed"):
        return list(range(n_tasks))
    if task_order == "seed":
        return torch.randperm(n_tasks, generator=seeded_generator(seed, "task-order")).tolist()
    order = [int(t) for t in task_order]
    if sorted(order) != list(range(n_tasks)):
        raise InputError(f"task_order must list each of the {n_tasks} tasks exactly once, got {order}")
    return order


def _reorder(tasks: list[Task], order: list[int]) -> list[Task]:
    """Tasks in stream order, renumbered 0..T-1 so that a task's id is its position in the stream."""
    return [dataclasses.replace(tasks[j], id=i) for i, j in enumerate(order)]


def split(dataset: tuple[TensorData, TensorData, list[str]] | Sequence, n_tasks: int, *, name: str = "split",
          class_order="fixed", setting: str = "class-il", seed: int = 0, task_order=None,
          meta: dict | None = None, val: TensorData | None = None) -> Scenario:
    """Partition the classes into ``n_tasks`` tasks of equal size, in ``class_order``; ``val``
    (held-out training samples) is partitioned the same way into each task's ``val``.

    In ``domain-il`` the labels become the position of the class inside its task (split MNIST's
    domain-IL variant: "first or second digit of the pair"), so every task shares one label space.
    """
    _check_setting(setting)
    train, test, class_names = dataset
    n_classes = len(class_names)
    if n_tasks < 1 or n_classes % n_tasks:
        raise InputError(f"cannot split {n_classes} classes into {n_tasks} equal tasks "
                         f"(choose a number of tasks that divides {n_classes})")
    order = resolve_class_order(class_order, n_classes, seed)
    per = n_classes // n_tasks
    tasks = []
    for t in range(n_tasks):
        classes = order[t * per:(t + 1) * per]
        tasks.append(Task(t, _select(train, classes, setting), _select(test, classes, setting),
                          list(range(per)) if setting == "domain-il" else classes,
                          None if val is None else _select(val, classes, setting)))
    tasks = _reorder(tasks, _task_order(n_tasks, task_order, seed))
    return Scenario(name, setting, tasks, per if setting == "domain-il" else n_classes,
                    tuple(train.x.shape[1:]), order, {"class_names": class_names, **(meta or {})})


def _select(data: TensorData, classes: list[int], setting: str) -> TensorData:
    idx = torch.nonzero(torch.isin(data.y, torch.tensor(classes))).flatten()
    sub = data.subset(idx)
    if setting == "domain-il":
        lookup = torch.full((int(data.y.max()) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(classes)] = torch.arange(len(classes))
        sub = sub.with_labels(lookup[sub.y])
    return sub


def pixel_permutations(n_pixels: int, n_tasks: int, seed: int, first_task_identity: bool = False) -> torch.Tensor:
    """``[n_tasks, n_pixels]`` permutations; row 0 is the identity when ``first_task_identity``."""
    g = seeded_generator(seed, "pixel-permutations")
    perms = torch.stack([torch.randperm(n_pixels, generator=g) for _ in range(n_tasks)])
    if first_task_identity:
        perms[0] = torch.arange(n_pixels)
    return perms


def _permute(data: TensorData, perm: torch.Tensor) -> TensorData:
    x = data.x.flatten(2)[:, :, perm].reshape(data.x.shape)
    return TensorData(x, data.y, data.mean, data.std)


def permuted(dataset, n_tasks: int, seed: int = 0, *, first_task_identity: bool = False, name: str = "permuted",
             setting: str = "domain-il", task_order=None, meta: dict | None = None,
             val: TensorData | None = None, train_per_task: int | None = None) -> Scenario:
    """Permuted-MNIST style tasks: one seeded pixel permutation per task (the same for every channel).

    By default every task is permuted (the Avalanche and GEM convention); ``first_task_identity``
    keeps task 1 unpermuted (Continuum's). In ``class-il`` task *t* gets its own copy of the
    classes (labels offset by t * C), the "incremental class" variant. ``train_per_task`` keeps a
    seeded random subset of that many training samples in each task (GEM's ``samples_per_task``,
    1,000 in Lopez-Paz & Ranzato 2017: a random draw per task, in the data's order).
    """
    _check_setting(setting)
    train, test, class_names = dataset
    c = len(class_names)
    h, w = train.x.shape[-2:]
    perms = pixel_permutations(h * w, n_tasks, seed, first_task_identity)
    tasks = []
    for t in range(n_tasks):
        offset = t * c if setting == "class-il" else 0
        tr, te = _permute(train, perms[t]), _permute(test, perms[t])
        if train_per_task is not None and train_per_task < len(tr):
            g = seeded_generator(seed, "train-per-task", t)
            tr = tr.subset(torch.randperm(len(tr), generator=g)[:train_per_task].sort().values)
        va = None if val is None else _permute(val, perms[t])
        if offset:
            tr, te = tr.with_labels(tr.y + offset), te.with_labels(te.y + offset)
            va = None if va is None else va.with_labels(va.y + offset)
        tasks.append(Task(t, tr, te, list(range(offset, offset + c)), va))
    tasks = _reorder(tasks, _task_order(n_tasks, task_order, seed))
    n_out = c * n_tasks if setting == "class-il" else c
    return Scenario(name, setting, tasks, n_out, tuple(train.x.shape[1:]), list(range(c)),
                    {"class_names": class_names, "permutation": "all tasks" if not first_task_identity
                     else "first task identity", **(meta or {})})


def rotated(dataset, angles: Sequence[float], *, name: str = "rotated", setting: str = "domain-il",
            seed: int = 0, task_order=None, meta: dict | None = None, val: TensorData | None = None) -> Scenario:
    """Rotated-MNIST style tasks: task *t* shows every image rotated by ``angles[t]`` degrees."""
    from torchvision.transforms.functional import rotate

    _check_setting(setting)
    if setting == "class-il":
        raise InputError("rotated scenarios share one label space: use setting domain-il or task-il")
    train, test, class_names = dataset
    c = len(class_names)
    tasks = []
    for t, angle in enumerate(angles):
        rot = lambda d: TensorData(rotate(d.x, float(angle)), d.y, d.mean, d.std)  # noqa: E731, B023
        tasks.append(Task(t, rot(train), rot(test), list(range(c)), None if val is None else rot(val)))
    tasks = _reorder(tasks, _task_order(len(angles), task_order, seed))
    return Scenario(name, setting, tasks, c, tuple(train.x.shape[1:]), list(range(c)),
                    {"class_names": class_names, "angles": [float(a) for a in angles], **(meta or {})})
