"""Checkpoints of a train state, one directory per epoch (format 2: ``arrays.npz`` and
``meta.json``); see the package docstring for the format."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmlp._files import atomic_write, fsync_directory
from jaxmlp.checkpoints._common import (
    CheckpointError,
    as_dtype,
    check_count,
    check_meta,
    check_path,
    checksum,
    named_leaves,
    one_line,
)
from jaxmlp.model import layer_sizes_of
from jaxmlp.training import TrainState
from jaxmlp.training._state import check_state

_PARAMS_HINT = "use save_params / load_params"

FORMAT_VERSION = 2

ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"
_TMP = ".tmp-"
_DELETING = ".deleting-"
# The keys save sets in meta.json; a caller's meta may not replace them.
_CHECKPOINT_KEYS = frozenset({"format", "epoch", "layer_sizes", "dtype", "arrays", "sha256"})


class ArchitectureMismatchError(ValueError):
    """A checkpoint holds arrays of other shapes than the model it is restored into."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """Result of `restore` and `restore_latest`.

    Attributes:
        state: the restored train state (the target's static fields, the checkpoint's arrays).
        epoch: the epoch it was saved at.
        meta: the checkpoint's JSON metadata (``meta.json``: the format's keys and the caller's).
        skipped: ``(epoch, reason)`` for each newer checkpoint that could not be used.
    """

    state: TrainState
    epoch: int
    meta: dict[str, Any]
    skipped: tuple[tuple[int, str], ...] = ()


# --------------------------------------------------------------------------------------------
# The arrays of a train state


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


# --------------------------------------------------------------------------------------------
# Saving a train state


def list_steps(directory: str | os.PathLike[str]) -> list[int]:
    """Saved epochs in ``directory``, oldest first (empty if there is none)."""
    directory = check_path("directory", directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if _complete_step(p))


def _complete_step(path: Path) -> bool:
    """A finished step: a numbered directory with its ``meta.json`` (written before the
    directory got its number). A numbered directory without it is damage, or a deletion made
    in place by some other program."""
    return path.is_dir() and path.name.isdigit() and (path / META_FILE).is_file()


def save(
    directory: str | os.PathLike[str],
    epoch: int,
    state: TrainState,
    *,
    meta: dict[str, Any] | None = None,
    keep: int = 3,
    also_keep: Collection[int] = (),
) -> Path:
    """Saves ``state`` as epoch ``epoch`` in ``<directory>/<epoch>`` and deletes all but the
    ``keep`` newest epochs (``keep=0`` keeps them all) and those of ``also_keep`` (e.g. the
    best epoch so far, which is then never rotated out). Saving an epoch again replaces it.

    ``meta``: JSON values stored beside the arrays (in ``meta.json``) and returned as
    ``Restored.meta``, e.g. the history so far; its keys may not be the format's own
    (``format``, ``epoch``, ``layer_sizes``, ``dtype``, ``arrays``, ``sha256``).

    Blocks until the checkpoint is complete on disk (fsynced). Returns the step directory.
    ``state`` stays valid (its arrays are copied to the host, never donated).

    Raises:
        CheckpointError: the directory cannot be written (the previous checkpoints are intact).
        TypeError, ValueError: a wrong argument; ``meta`` holds something JSON cannot represent.
    """
    directory = check_path("directory", directory)
    epoch = check_count("epoch", epoch)
    check_state(state, "state", params_hint=_PARAMS_HINT)
    keep = check_count("keep", keep)
    if isinstance(also_keep, (str, bytes)) or not isinstance(also_keep, Collection):
        raise TypeError(f"also_keep must be a collection of epochs, got {also_keep!r}")
    also_keep = {check_count("also_keep[]", e) for e in also_keep}
    extra = check_meta(meta, _CHECKPOINT_KEYS)
    host = jax.device_get(state_arrays(state))
    named = [(name, np.asarray(leaf)) for name, leaf in named_leaves(host)]
    info = {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "layer_sizes": list(layer_sizes_of(state.params)),
        "dtype": str(state.params[0]["w"].dtype),
        "arrays": [[name, str(value.dtype), list(value.shape)] for name, value in named],
        "sha256": checksum(host),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    text = json.dumps(info, indent=1) + "\n"  # a caller's unserializable meta fails here
    final = directory / str(epoch)
    tmp = directory / f"{_TMP}{epoch}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(directory)
        tmp.mkdir()
        # Each file is fsynced, and so is tmp (atomic_write syncs the folder it writes in).
        # Any: numpy's stub would read a leaf named allow_pickle as that flag; none is.
        arrays: dict[str, Any] = dict(named)
        atomic_write(tmp / ARRAYS_FILE, lambda f: np.savez(f, **arrays))
        atomic_write(tmp / META_FILE, lambda f: f.write(text.encode("utf-8")))
        if final.exists():
            # A step saved earlier and then abandoned (the run fell back past it): replace it.
            _remove_step(directory, epoch)
        os.rename(tmp, final)
        fsync_directory(directory)
        for old in list_steps(directory)[:-keep] if keep else []:
            if old not in also_keep:
                _remove_step(directory, old)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"cannot save the checkpoint of epoch {epoch} in {directory}: {one_line(e)}"
        ) from e
    return final


def _remove_step(directory: Path, step: int) -> None:
    """Delete a step directory: first an atomic rename that hides it from `list_steps`."""
    doomed = directory / f"{_DELETING}{step}-{os.getpid()}-{time.monotonic_ns()}"
    os.rename(directory / str(step), doomed)
    shutil.rmtree(doomed)


def _remove_leftovers(directory: Path) -> None:
    """Remove what killed processes left: unfinished saves (``.tmp-``), deletions they started
    (``.deleting-``), and numbered directories without their ``meta.json``."""
    for leftover in directory.iterdir():
        unfinished = leftover.name.isdigit() and not _complete_step(leftover)
        if leftover.name.startswith((_TMP, _DELETING)) or unfinished:
            shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Restoring a train state

Shapes = list[tuple[str, tuple[int, ...], str]]


def _shapes(tree: Any) -> Shapes:
    """``(name, shape, dtype)`` of every array in ``tree``."""
    return [
        (name, tuple(leaf.shape), str(np.dtype(leaf.dtype))) for name, leaf in named_leaves(tree)
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
        for name, target in named_leaves(want):
            if name not in stored.files:
                raise ValueError(f"{ARRAYS_FILE} has no array {name}")
            dtype = np.dtype(target.dtype)
            value = as_dtype(stored[name], dtype)
            if (value.dtype, value.shape) != (dtype, tuple(target.shape)):
                raise ValueError(
                    f"{ARRAYS_FILE}: {name} is {value.shape}/{value.dtype}, "
                    f"expected {tuple(target.shape)}/{dtype}"
                )
            sharding = getattr(target, "sharding", None)
            leaves.append(jax.device_put(value, sharding) if sharding is not None else value)
    return jax.tree.unflatten(jax.tree.structure(want), leaves)


class _Unusable(Exception):
    """A saved step that cannot be restored; the message says why."""


def _read_step(directory: Path, epoch: int, want: dict[str, Any]) -> tuple[dict, dict]:
    """``(arrays, meta)`` of one step, verified against its sha256.

    Raises:
        ArchitectureMismatchError: the step's arrays have other shapes than ``want``'s.
        _Unusable: the step cannot be read, or its arrays do not match their sha256.
    """
    step_dir = directory / str(epoch)
    try:
        if not (step_dir / META_FILE).is_file():
            raise ValueError(f"incomplete: no {META_FILE} (a save or a deletion was interrupted)")
        meta = _read_meta_file(step_dir)
    except Exception as e:
        raise _Unusable(f"unreadable metadata ({one_line(e)})") from e
    _check_compatible(epoch, directory, _meta_shapes(meta), _shapes(want))
    try:
        arrays = _load_arrays(step_dir, want)
        if meta.get("sha256") != checksum(arrays):
            raise ValueError("the arrays do not match the sha256 saved with them")
    except Exception as e:
        raise _Unusable(one_line(e)) from e
    return arrays, meta


def _numbered_steps(directory: Path) -> list[int]:
    """Every numbered step, finished or not: an unfinished newer one is reported, not ignored."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _no_checkpoint(directory: Path, epoch: int | None = None) -> CheckpointError:
    """The error for a missing checkpoint, naming the epochs that are there."""
    wanted = f"no checkpoint of epoch {epoch}" if epoch is not None else "no checkpoint"
    steps = list_steps(directory)
    if steps:
        where = f"; the saved epochs are {', '.join(map(str, steps))}"
    elif directory.is_dir():
        where = " (the directory holds none)"
    else:
        where = " (no such directory)"
    return CheckpointError(f"{wanted} in {directory}{where}")


def restore(
    directory: str | os.PathLike[str], target: TrainState, *, epoch: int | None = None
) -> Restored:
    """The checkpoint of ``epoch`` in ``directory`` (``None``: the newest one that can be read
    and verifies), restored into ``target``.

    ``target`` is a freshly created train state of the saved run's configuration, e.g.
    ``jaxmlp.create_train_state(jax.random.key(0), layer_sizes, optimizer, options=options)``.
    A checkpoint holds only arrays: the optimizer and the options (static fields, code and
    settings) and the optimizer state's tree structure are the target's, and the target's
    shapes and dtypes are checked against the saved ones. The target's own values are not used
    and its arrays stay valid.

    Raises:
        CheckpointError: there is no checkpoint of ``epoch`` (the message names the saved
            epochs), or it cannot be read or does not match its sha256; with ``epoch=None``: there
            is no checkpoint, or none can be read.
        ArchitectureMismatchError: the checkpoint's arrays have other shapes or dtypes than
            ``target``'s (another architecture, dtype or optimizer).
        TypeError, ValueError: a wrong argument.
    """
    if epoch is None:
        restored = restore_latest(directory, target)
        if restored is None:
            raise _no_checkpoint(Path(directory))
        return restored
    directory = check_path("directory", directory)
    check_state(target, "target", params_hint=_PARAMS_HINT)
    epoch = check_count("epoch", epoch)
    if not (directory / str(epoch)).is_dir():
        raise _no_checkpoint(directory, epoch)
    try:
        arrays, meta = _read_step(directory, epoch, state_arrays(target))
    except _Unusable as e:
        raise CheckpointError(f"checkpoint epoch {epoch} in {directory} is unusable: {e}") from e
    return Restored(_with_arrays(target, arrays), epoch, meta)


def restore_latest(
    directory: str | os.PathLike[str],
    target: TrainState,
    *,
    quarantine: str | os.PathLike[str] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> Restored | None:
    """The newest checkpoint in ``directory`` that can be read and verifies, restored into
    ``target`` (a fresh state of the saved configuration; see `restore` for why one is
    needed); ``None`` if the directory holds no checkpoint.

    A newer checkpoint that cannot be read, or whose arrays do not match the sha256 recorded at
    save time, is reported to ``on_skip(epoch, reason)`` and, if ``quarantine`` is given, moved
    there (so that training can save that epoch again).

    Raises:
        ArchitectureMismatchError: a checkpoint's arrays have other shapes than ``target``'s.
        CheckpointError: there are checkpoints but none of them can be read.
        TypeError, ValueError: a wrong argument.
    """
    directory = check_path("directory", directory)
    check_state(target, "target", params_hint=_PARAMS_HINT)
    if quarantine is not None:
        quarantine = check_path("quarantine", quarantine)
    if on_skip is not None and not callable(on_skip):
        raise TypeError(
            f"on_skip must be a function on_skip(epoch, reason) or None, got "
            f"{type(on_skip).__name__}"
        )
    steps = _numbered_steps(directory)
    if not steps:
        return None
    want = state_arrays(target)
    skipped: list[tuple[int, str]] = []
    for epoch in reversed(steps):
        try:
            arrays, meta = _read_step(directory, epoch, want)
        except _Unusable as e:
            reason = str(e)
        else:
            return Restored(_with_arrays(target, arrays), epoch, meta, tuple(skipped))
        skipped.append((epoch, reason))
        if on_skip is not None:
            on_skip(epoch, reason)
        if quarantine is not None:
            _move_aside(directory / str(epoch), quarantine)
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
    """The JSON metadata of one saved epoch (no arrays are read).

    Raises:
        CheckpointError: there is no checkpoint of ``epoch`` (the message names the saved ones).
    """
    directory = check_path("directory", directory)
    step_dir = directory / str(check_count("epoch", epoch))
    if not (step_dir / META_FILE).is_file():
        raise _no_checkpoint(directory, epoch)
    return _read_meta_file(step_dir)
