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


#: the only callables a CIFAR python pickle refers to: numpy's array reconstruction (a pickle names
#: ``numpy.core`` when written by numpy 1 and Python 2, as the official files were, ``numpy._core``
#: by numpy 2; at protocol 5, ``_frombuffer``) and, in one re-pickled by Python 3 at protocol 2,
#: ``_codecs.encode`` for byte strings; dicts, lists, ints and byte strings need none
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                  ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only what the CIFAR format holds: a pickle is a program, and one
    whose ``__reduce__`` names ``os.system`` would otherwise run it from a data folder."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise _Refused(f"{module}.{name}")
        if module == "_codecs":
            import _codecs

            return _codecs.encode
        if module == "numpy":
            return getattr(np, name)
        import importlib

        return getattr(importlib.import_module("numpy._core." + module.rsplit(".", 1)[1]), name)


class _Refused(pickle.UnpicklingError):
    """A pickle that names a callable the CIFAR format never holds."""


def read_cifar_pickle(path: str | Path, keys: tuple[str, ...]) -> dict:
    """Load one CIFAR python pickle and check it holds ``keys`` (byte-string keys, as shipped).
    Only numpy arrays, dicts, lists, numbers and byte strings are rebuilt (``_CifarUnpickler``):
    nothing in the file can run code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise InputError(f"{path} is not a CIFAR pickle: it refers to {e}, which the format never holds "
                         "(not loaded: a pickle can run code; replace the file)") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError) as e:
        raise InputError(f"cannot read {path}: {e} (truncated or not a CIFAR pickle; replace it)") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not a CIFAR-100 pickle (it holds a {type(obj).__name__}, not a dict)")
    found = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in keys if k not in found]
    if missing:
        raise InputError(f"{path} is not a CIFAR-100 pickle: it lacks the key(s) {', '.join(missing)}")
    return found
