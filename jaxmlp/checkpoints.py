"""Checkpoints of a :class:`~jaxmlp.TrainState`, one per epoch.

A checkpoint directory holds one sub-directory per saved epoch::

    <dir>/<epoch>/
        arrays.npz   the arrays of the train state, an uncompressed NumPy .npz (one .npy each)
        meta.json    the epoch, the layer sizes, the dtype, the name, dtype and shape of every
                     array, a sha256 of every array's bytes, and whatever the caller adds (the
                     CLI stores the per-epoch history and the config there, so that the history
                     and the state always come from the same moment)

The arrays are named by their path in the train state: ``params/<layer>/w`` and
``params/<layer>/b``, ``opt_state/0000``, ``opt_state/0001``... (the optimizer state's leaves in
``jax.tree.leaves`` order), ``step`` (int32 scalar) and ``key`` (raw ``uint32`` key data).

A step is written whole into a hidden sibling directory ``<dir>/.tmp-<epoch>-<pid>``, both
files and the directory fsynced, and only then renamed to ``<dir>/<epoch>``: a numbered
directory is complete by construction, and a save killed part-way leaves a ``.tmp-`` directory
that is never listed and that the next save removes. Old steps beyond ``keep`` are first renamed
to a hidden ``.deleting-`` name and then deleted, so a kill mid-deletion never leaves a half
step listed either.

The arrays are not written through orbax-checkpoint: every orbax save path measured (a
``CheckpointManager`` with or without item handlers, reused or not, a ``StandardCheckpointer``,
``PyTreeCheckpointer`` or synchronous ``Checkpointer``, with or without OCDBT) kept 20-42 kB per
save alive in the process (``scripts/checkpoint_memory.py``; tensorstore's Python bindings leak
the metrics and spec objects that orbax queries on every save), which a run with a checkpoint
per epoch shows as memory growing by the epoch; this writer keeps 0.3 kB. Checkpoints of
format 1 (written through orbax by earlier versions: ``state/`` and ``meta/`` items,
``_CHECKPOINT_METADATA``) are still listed and restored, through orbax.

Restoring builds on a *target*: a freshly created train state of the intended configuration,
which fixes the shapes, dtypes and the optimizer state's structure. A checkpoint of another
architecture is refused with an :class:`ArchitectureMismatchError` naming both shapes; a
checkpoint that cannot be read or whose bytes do not match its sha256 is skipped in favour of
the previous one (:func:`restore_latest` reports which were skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmlp.model import layer_sizes_of
from jaxmlp.training import TrainState

FORMAT_VERSION = 2

ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"
_TMP = ".tmp-"
_DELETING = ".deleting-"
# A finished step of format 1 (orbax) holds this file; its temporary directories are named so.
_V1_METADATA = "_CHECKPOINT_METADATA"
_V1_TMP = re.compile(r"^\d+\.orbax-checkpoint-tmp-")


class CheckpointError(OSError):
    """A checkpoint cannot be written, or no checkpoint in a directory can be read."""


class ArchitectureMismatchError(ValueError):
    """A checkpoint holds arrays of other shapes than the model it is restored into."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """Result of :func:`restore_latest`.

    Attributes:
      state: the restored train state (the target's static fields, the checkpoint's arrays).
      epoch: the epoch it was saved at.
      meta: the checkpoint's JSON metadata.
      skipped: ``(epoch, reason)`` for each newer checkpoint that could not be used.
    """

    state: TrainState
    epoch: int
    meta: dict[str, Any]
    skipped: tuple[tuple[int, str], ...] = ()


def state_arrays(state: TrainState) -> dict[str, Any]:
    """The arrays of a train state as a plain tree of dicts and lists (what is saved)."""
    leaves = jax.tree.leaves(state.opt_state)
    return {
        "params": state.params,
        "opt_state": {f"{i:04d}": leaf for i, leaf in enumerate(leaves)},
        "step": state.step,
        "key": state.key,
    }


def _with_arrays(target: TrainState, arrays: dict[str, Any]) -> TrainState:
    treedef = jax.tree.structure(target.opt_state)
    leaves = [arrays["opt_state"][k] for k in sorted(arrays["opt_state"])]
    return target.replace(
        params=list(arrays["params"]),
        opt_state=jax.tree.unflatten(treedef, leaves),
        step=arrays["step"],
        key=arrays["key"],
    )


def checksum(arrays: dict[str, Any]) -> str:
    """sha256 over every array's dtype, shape and bytes, in tree order."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(arrays):
        value = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` in tree order, named by path: ``params/0/w``, ``opt_state/0000``..."""
    return [
        (jax.tree_util.keystr(path, simple=True, separator="/"), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def list_steps(directory: str | os.PathLike[str]) -> list[int]:
    """Saved epochs in ``directory``, oldest first (empty if there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if _complete_step(p))


def _complete_step(path: Path) -> bool:
    """A finished step: a numbered directory with its metadata (``meta.json``, written before
    the directory got its number; or format 1's ``_CHECKPOINT_METADATA``). A numbered directory
    without it is what an older version's in-place deletion, or damage, left."""
    return (
        path.is_dir()
        and path.name.isdigit()
        and ((path / META_FILE).is_file() or (path / _V1_METADATA).is_file())
    )


def save(
    directory: str | os.PathLike[str],
    epoch: int,
    state: TrainState,
    *,
    meta: dict[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Saves ``state`` as epoch ``epoch`` and deletes all but the ``keep`` newest epochs
    (``keep=0`` keeps them all).

    Blocks until the checkpoint is complete on disk (fsynced). Returns the step directory.

    Raises:
      CheckpointError: the directory cannot be written (the previous checkpoints are intact).
      TypeError: ``meta`` holds something JSON cannot represent.
    """
    directory = Path(directory)
    epoch = int(epoch)
    host = jax.device_get(state_arrays(state))
    named = [(name, np.asarray(leaf)) for name, leaf in _named_leaves(host)]
    info = {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "layer_sizes": list(layer_sizes_of(state.params)),
        "dtype": str(state.params[0]["w"].dtype),
        "arrays": [[name, str(value.dtype), list(value.shape)] for name, value in named],
        "sha256": checksum(host),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(meta or {}),
    }
    text = json.dumps(info, indent=1) + "\n"  # a caller's unserializable meta fails here
    final = directory / str(epoch)
    tmp = directory / f"{_TMP}{epoch}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(directory)
        tmp.mkdir()
        with open(tmp / ARRAYS_FILE, "wb") as f:
            np.savez(f, **dict(named))
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _fsync_directory(tmp)
        if final.exists():
            # A step saved earlier and then abandoned (the run fell back past it): replace it.
            _remove_step(directory, epoch)
        os.rename(tmp, final)
        _fsync_directory(directory)
        for old in list_steps(directory)[:-keep] if keep else []:
            _remove_step(directory, old)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"cannot save the checkpoint of epoch {epoch} in {directory}: {_one_line(e)}"
        ) from e
    return final


def _fsync_directory(path: Path) -> None:
    """Make a directory's entries (a new file, a rename) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot sync a directory; nothing more to do there
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _remove_step(directory: Path, step: int) -> None:
    """Delete a step directory: first an atomic rename that hides it from :func:`list_steps`."""
    doomed = directory / f"{_DELETING}{step}-{os.getpid()}-{time.monotonic_ns()}"
    os.rename(directory / str(step), doomed)
    shutil.rmtree(doomed)


def _remove_leftovers(directory: Path) -> None:
    """Remove what killed processes left: unfinished saves (``.tmp-``, or format 1's orbax
    temporary directories), deletions they started (``.deleting-``) and numbered directories
    half-deleted in place (by format 1)."""
    for leftover in directory.iterdir():
        unfinished = leftover.name.isdigit() and not _complete_step(leftover)
        if (
            leftover.name.startswith((_TMP, _DELETING))
            or _V1_TMP.match(leftover.name)
            or unfinished
        ):
            shutil.rmtree(leftover, ignore_errors=True)


_OS_ERROR_CODE = re.compile(r"os_error_code=(\d+)")


def _one_line(error: BaseException) -> str:
    """The first line of an error, with the operating system's reason first (e.g. "No space
    left on device"), also where tensorstore (format 1) buries it far down its message."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    text = str(error).strip()
    lines = text.splitlines()
    first = lines[0][:300] if lines else type(error).__name__
    code = _OS_ERROR_CODE.search(text)
    if code:
        return f"{os.strerror(int(code.group(1)))} ({first})"
    return first


Shapes = list[tuple[str, tuple[int, ...], str]]


def _shapes(tree: Any) -> Shapes:
    """``(name, shape, dtype)`` of every leaf (arrays, or orbax's array metadata)."""
    return [
        (name, tuple(leaf.shape), str(np.dtype(leaf.dtype))) for name, leaf in _named_leaves(tree)
    ]


def _describe_sizes(params_shapes: Shapes) -> str:
    w_shapes = [shape for name, shape, _ in params_shapes if name.endswith("/w")]
    if not w_shapes or any(len(s) != 2 for s in w_shapes):
        return "unknown layer sizes"
    return "-".join(str(n) for n in (w_shapes[0][0], *(s[1] for s in w_shapes)))


def _part(shapes: Shapes, prefix: str) -> Shapes:
    return [s for s in shapes if s[0].startswith(prefix)]


def _check_compatible(epoch: int, directory: Path, on_disk: Shapes, target: Shapes) -> None:
    """Raises ArchitectureMismatchError if the saved arrays do not fit the target's."""
    saved_params, want_params = _part(on_disk, "params/"), _part(target, "params/")
    if saved_params != want_params:
        differences = [
            f"{name} {shape}/{dtype} vs {want_shape}/{want_dtype}"
            for (name, shape, dtype), (_, want_shape, want_dtype) in zip(
                saved_params, want_params, strict=False
            )
            if (shape, dtype) != (want_shape, want_dtype)
        ]
        first = differences[0] if differences else "a different number of layers"
        raise ArchitectureMismatchError(
            f"checkpoint epoch {epoch} in {directory} holds a "
            f"{_describe_sizes(saved_params)} model but this run builds a "
            f"{_describe_sizes(want_params)} model (first difference, saved vs expected: "
            f"{first})"
        )
    saved_opt, want_opt = _part(on_disk, "opt_state/"), _part(target, "opt_state/")
    if saved_opt != want_opt:
        raise ArchitectureMismatchError(
            f"checkpoint epoch {epoch} in {directory} holds an optimizer state of "
            f"{len(saved_opt)} arrays {[s for _, s, _ in saved_opt][:4]}... but this run's "
            f"optimizer has {len(want_opt)} arrays {[s for _, s, _ in want_opt][:4]}...; "
            "was it saved with another optimizer?"
        )


def _read_meta_file(step_dir: Path) -> dict[str, Any]:
    meta = json.loads((step_dir / META_FILE).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), list):
        raise ValueError(f"{META_FILE} is not a checkpoint's metadata (no list of arrays)")
    return meta


def _meta_shapes(meta: dict[str, Any]) -> Shapes:
    return [(str(name), tuple(shape), str(dtype)) for name, dtype, shape in meta["arrays"]]


def _load_arrays(step_dir: Path, want: dict[str, Any]) -> dict[str, Any]:
    """The arrays of ``arrays.npz`` in ``want``'s tree, each of the target leaf's dtype and
    shape, placed like it."""
    leaves = []
    with np.load(step_dir / ARRAYS_FILE, allow_pickle=False) as stored:
        for name, target in _named_leaves(want):
            if name not in stored.files:
                raise ValueError(f"{ARRAYS_FILE} has no array {name}")
            value = stored[name]
            dtype = np.dtype(target.dtype)
            if value.dtype.kind == "V" and value.dtype.itemsize == dtype.itemsize:
                value = value.view(dtype)  # e.g. bfloat16, which .npy keeps as raw records
            if (value.dtype, value.shape) != (dtype, tuple(target.shape)):
                raise ValueError(
                    f"{ARRAYS_FILE}: {name} is {value.shape}/{value.dtype}, "
                    f"expected {tuple(target.shape)}/{dtype}"
                )
            sharding = getattr(target, "sharding", None)
            leaves.append(jax.device_put(value, sharding) if sharding is not None else value)
    return jax.tree.unflatten(jax.tree.structure(want), leaves)


def restore_latest(
    directory: str | os.PathLike[str],
    target: TrainState,
    *,
    quarantine: str | os.PathLike[str] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> Restored | None:
    """The newest checkpoint in ``directory`` that can be read and verifies, restored into
    ``target``'s structure; ``None`` if the directory holds no checkpoint.

    A newer checkpoint that cannot be read, or whose arrays do not match the sha256 recorded at
    save time, is reported to ``on_skip(epoch, reason)`` and, if ``quarantine`` is given, moved
    there (so that training can save that epoch again).

    Raises:
      ArchitectureMismatchError: a checkpoint's arrays have other shapes than ``target``'s.
      CheckpointError: there are checkpoints but none of them can be read.
    """
    directory = Path(directory)
    # Every numbered step, finished or not: an unfinished newer one is reported, not ignored.
    steps = (
        sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())
        if directory.is_dir()
        else []
    )
    if not steps:
        return None
    want = state_arrays(target)
    skipped: list[tuple[int, str]] = []
    for epoch in reversed(steps):
        step_dir = directory / str(epoch)
        meta: dict[str, Any] | None = None
        try:
            if (step_dir / META_FILE).is_file():
                meta = _read_meta_file(step_dir)
                on_disk = _meta_shapes(meta)
            elif (step_dir / _V1_METADATA).is_file():
                on_disk = _v1_shapes(step_dir)
            else:
                raise ValueError(
                    f"incomplete: no {META_FILE} (a save or a deletion was interrupted)"
                )
        except Exception as e:
            reason = f"unreadable metadata ({_one_line(e)})"
        else:
            _check_compatible(epoch, directory, on_disk, _shapes(want))
            try:
                if meta is None:
                    arrays, meta = _v1_restore(step_dir, want)
                else:
                    arrays = _load_arrays(step_dir, want)
                if meta.get("sha256") != checksum(arrays):
                    raise ValueError("the arrays do not match the sha256 saved with them")
                return Restored(_with_arrays(target, arrays), epoch, meta, tuple(skipped))
            except Exception as e:
                reason = _one_line(e)
        skipped.append((epoch, reason))
        if on_skip is not None:
            on_skip(epoch, reason)
        if quarantine is not None:
            _move_aside(step_dir, Path(quarantine))
    details = "; ".join(f"epoch {e}: {r}" for e, r in skipped)
    raise CheckpointError(f"no readable checkpoint in {directory} ({details})")


def _move_aside(step_dir: Path, quarantine: Path) -> None:
    quarantine.mkdir(parents=True, exist_ok=True)
    destination = quarantine / f"epoch-{step_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with contextlib.suppress(OSError):
        if destination.exists():
            shutil.rmtree(destination)
        step_dir.rename(destination)


def read_meta(directory: str | os.PathLike[str], epoch: int) -> dict[str, Any]:
    """The JSON metadata of one saved epoch (no arrays are read)."""
    step_dir = Path(directory) / str(int(epoch))
    if (step_dir / META_FILE).is_file():
        return _read_meta_file(step_dir)
    if (step_dir / _V1_METADATA).is_file():
        ocp, manager = _v1_manager(step_dir.parent)
        try:
            restored = manager.restore(
                int(epoch), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            return dict(restored["meta"] or {})
        finally:
            manager.close()
    raise CheckpointError(f"no checkpoint of epoch {epoch} in {directory}")


# Format 1: a step written by orbax's CheckpointManager with a "state" item (StandardSave of
# state_arrays) and a "meta" item (JsonSave). Read only.


def _v1_manager(directory: Path):
    import orbax.checkpoint as ocp

    # orbax logs informational lines through absl at WARNING level (e.g. about items it was not
    # asked to restore); those are not problems for a command-line user.
    logging.getLogger("absl").setLevel(logging.ERROR)
    manager = ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=False),
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )
    return ocp, manager


def _v1_shapes(step_dir: Path) -> Shapes:
    _, manager = _v1_manager(step_dir.parent)
    try:
        on_disk = manager.item_metadata(int(step_dir.name))["state"]
        if on_disk is None:
            raise ValueError("no readable array metadata")
        return _shapes(on_disk)
    finally:
        manager.close()


def _v1_restore(step_dir: Path, want: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ocp, manager = _v1_manager(step_dir.parent)
    try:
        restored = manager.restore(
            int(step_dir.name),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(want), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"] or {})
    finally:
        manager.close()
