"""What the checkpoint directories of [`jaxmlp.checkpoints`][] and its params files
(`jaxmlp.checkpoints._params`) share: the error they raise, the sha256 of a tree of arrays,
the names of its arrays, the one-line reason of a failure, and the checks of arguments at their
boundary (each names the argument, what it got and what was expected). Files are written through
`jaxmlp._files.atomic_write`.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np


class CheckpointError(OSError):
    """A checkpoint or params file cannot be written, or cannot be read (missing, not of this
    format, or damaged)."""


def check_path(argument: str, value: Any) -> Path:
    """A file or directory name: a str or an ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{argument} must be a path (a str or os.PathLike), got {type(value).__name__} "
            f"{value!r:.80}"
        )
    return Path(value)


def check_count(argument: str, value: Any) -> int:
    """An int >= 0: a Python or NumPy int, or a 0-d integer array (such as ``state.step``)."""
    number = None
    if not isinstance(value, bool) and getattr(value, "dtype", None) != np.bool_:
        with contextlib.suppress(TypeError):
            number = operator.index(value)
    if number is None:
        raise TypeError(f"{argument} must be an int >= 0, got {type(value).__name__} {value!r:.80}")
    if number < 0:
        raise ValueError(f"{argument}={number} is invalid; expected an int >= 0")
    return number


def check_meta(meta: Any, reserved: frozenset[str]) -> dict[str, Any]:
    """A caller's metadata: ``None`` or a dict whose keys are not among the format's own
    (``reserved``: a replaced ``arrays`` or ``sha256`` would make the file unreadable)."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict of JSON values or None, got {type(meta).__name__}")
    clashes = sorted(reserved.intersection(meta))
    if clashes:
        raise ValueError(
            f"meta has the keys {clashes}, which the file format sets itself; expected other "
            f"names (reserved: {', '.join(sorted(reserved))})"
        )
    return dict(meta)


def checksum(arrays: Any) -> str:
    """sha256 over every array's dtype, shape and bytes, in tree order."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(arrays):
        value = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` in tree order, named by path: ``params/0/w``, ``opt_state/0000``..."""
    return [
        (jax.tree_util.keystr(path, simple=True, separator="/"), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def as_dtype(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``value`` read from a .npy as ``dtype``: .npy keeps e.g. bfloat16 as raw records."""
    if value.dtype.kind == "V" and value.dtype.itemsize == dtype.itemsize:
        return value.view(dtype)
    return value


def one_line(error: BaseException) -> str:
    """The first line of an error, with the operating system's reason first (e.g. "No space
    left on device")."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
