"""Readers for the on-disk formats of the real datasets: IDX (MNIST, Fashion-MNIST) and the
CIFAR-100 python pickles. They validate what they read, so a truncated or foreign file gives
one clear sentence instead of a numpy traceback."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from clbench.common.errors import InputError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read {path}: {e} (the file is truncated or corrupt; replace it)") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or gzip) into an array of its declared shape and type."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        magic = raw[:4].hex() if len(raw) >= 4 else "missing"
        raise InputError(f"{path} is not an IDX file (magic number {magic}); replace it with the original file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path} is truncated (its IDX header is incomplete); replace it with the original file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != need:
        raise InputError(f"{path} is truncated or corrupt: its header declares shape {dims} "
                         f"({need} bytes) but it holds {len(raw) - header}; replace it with the original file")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip when the name ends in .gz): the tests make real files with it."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def read_cifar_pickle(path: str | Path, keys: tuple[str, ...]) -> dict:
    """Load one CIFAR python pickle and check it holds ``keys`` (byte-string keys, as shipped)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e} (truncated or not a CIFAR pickle; replace it)") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not a CIFAR-100 pickle (it holds a {type(obj).__name__}, not a dict)")
    found = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in keys if k not in found]
    if missing:
        raise InputError(f"{path} is not a CIFAR-100 pickle: it lacks the key(s) {', '.join(missing)}")
    return found
