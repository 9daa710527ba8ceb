"""Shared fixtures (the functions they use are in ``tests.helpers``)."""

from __future__ import annotations

import pytest

from tests.helpers import make_idx_dataset


@pytest.fixture
def idx_root(tmp_path):
    make_idx_dataset(tmp_path / "mnist")
    return tmp_path / "mnist"


@pytest.fixture(scope="session")
def ray_instance():
    """One real local Ray instance for the whole test run (about 10 s to start). Its workers get
    the repository on PYTHONPATH, so they import ``tests.faulty`` as the pool's processes do."""
    import os
    from pathlib import Path

    import ray

    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield ray
    ray.shutdown()
