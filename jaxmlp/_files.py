"""Files written whole or not at all, and values made ready for JSON: one rule each.

Run directories (``config.json``, ``history.json``, ``metrics.json``), the data cache, saved
parameters, figures and the result files of the experiments and benchmarks are all written
through `atomic_write`: a temporary file in the destination's folder, flushed and fsynced,
renamed over the destination, then the folder fsynced. A reader sees the old file or the new
one, never a part; a failed write removes its temporary file and leaves the old file intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (a new file, a rename) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot sync a directory; nothing more to do there
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], object],
    *,
    make_parents: bool = True,
) -> Path:
    """Create or replace ``path`` with what ``write(file)`` writes to an open binary file.

    The bytes go to a temporary file beside ``path`` (``.<name>.<random>.tmp``), which is
    fsynced and renamed over ``path``; then the folder is fsynced. Missing folders are created
    when ``make_parents``. Permissions are 0644 (a temporary file starts private).

    Raises:
        OSError: the folder or the file cannot be written; no temporary file is left and an
            existing ``path`` is unchanged. Exceptions raised by ``write`` propagate likewise.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
    return path


def json_ready(value: Any) -> Any:
    """A copy of ``value`` that `json.dumps` accepts with ``allow_nan=False``: dict keys
    as strings, tuples as lists, NumPy / JAX scalars and arrays as Python numbers and lists,
    paths as strings, and NaN and infinities as ``None`` (JSON's null)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy and jax arrays / scalars
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike[str], document: Any) -> Path:
    """Write ``document`` (made `json_ready`) as indented JSON, atomically."""
    text = json.dumps(json_ready(document), indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
