"""Checkpoints of a :class:`~jaxmlp.TrainState`, one per epoch, through orbax-checkpoint.

A checkpoint directory holds one sub-directory per saved epoch (``<dir>/<epoch>/``), written by
``orbax.checkpoint.CheckpointManager``: orbax writes each step into a temporary directory and
renames it into place only when complete, so a step directory is either whole or absent; stale
temporary directories of an interrupted save are removed when the directory is next opened.

Each step has two items:

``state``
    The arrays of the train state: ``params`` (list of ``{"w", "b"}``), ``opt_state`` (the
    optimizer state's leaves, in ``jax.tree.leaves`` order, keyed ``"0000"``, ``"0001"``...),
    ``step`` (int32 scalar) and ``key`` (raw ``uint32`` key data).
``meta``
    JSON: the epoch, the layer sizes, the dtype, a sha256 of every array's bytes, and
    whatever the caller adds (the CLI stores the per-epoch history there, so that the history
    and the state always come from the same moment).

Restoring builds on a *target*: a freshly created train state of the intended configuration,
which fixes the shapes, dtypes and the optimizer state's structure. A checkpoint of another
architecture is refused with an :class:`ArchitectureMismatchError` naming both shapes; a
checkpoint that cannot be read or whose bytes do not match its sha256 is skipped in favour of
the previous one (:func:`restore_latest` reports which were skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
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

FORMAT_VERSION = 1


class CheckpointError(OSError):
    """A checkpoint cannot be written, or no checkpoint in a directory can be read."""


class ArchitectureMismatchError(ValueError):
    """A checkpoint holds arrays of other shapes than the model it is restored into."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """Result of :func:`restore_latest`.

    Attributes:
      state: the restored train state (the target's static fields, the checkpoint's arrays).
      epoch: the epoch (orbax step) it was saved at.
      meta: the checkpoint's JSON metadata.
      skipped: ``(epoch, reason)`` for each newer checkpoint that could not be used.
    """

    state: TrainState
    epoch: int
    meta: dict[str, Any]
    skipped: tuple[tuple[int, str], ...] = ()


def _ocp():
    # orbax logs informational lines through absl at WARNING level (e.g. about items it was not
    # asked to restore); those are not problems for a command-line user.
    import orbax.checkpoint as ocp

    logging.getLogger("absl").setLevel(logging.ERROR)
    return ocp


def _manager(directory: Path, keep: int | None = None, *, create: bool = False):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        # Synchronous: the next epoch donates the state's buffers, so they must be on disk first.
        enable_async_checkpointing=False,
        cleanup_tmp_directories=create,
        create=create,
    )
    return ocp.CheckpointManager(
        directory.absolute(),
        options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )


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


def list_steps(directory: str | os.PathLike[str]) -> list[int]:
    """Saved epochs in ``directory``, oldest first (empty if there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if _complete_step(p))


def _complete_step(path: Path) -> bool:
    """A finished orbax step: a numbered directory with its metadata file (orbax writes a step
    under a temporary name and renames it when done; anything else is a leftover)."""
    return path.is_dir() and path.name.isdigit() and (path / _METADATA).is_file()


_METADATA = "_CHECKPOINT_METADATA"


def save(
    directory: str | os.PathLike[str],
    epoch: int,
    state: TrainState,
    *,
    meta: dict[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Saves ``state`` as epoch ``epoch`` and deletes all but the ``keep`` newest epochs.

    Blocks until the checkpoint is complete on disk. Returns the step directory.

    Raises:
      CheckpointError: the directory cannot be written (the previous checkpoints are intact).
    """
    directory = Path(directory)
    arrays = state_arrays(state)
    info = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "layer_sizes": list(layer_sizes_of(state.params)),
        "dtype": str(state.params[0]["w"].dtype),
        "sha256": checksum(arrays),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(meta or {}),
    }
    ocp = _ocp()
    try:
        _remove_abandoned_deletions(directory)
        if epoch in list_steps(directory):
            # A step saved earlier and then abandoned (the run fell back past it): replace it.
            _remove_step(directory, epoch)
        # Old steps are pruned below by this module, not by orbax: a step is renamed out of
        # sight before it is deleted, so a kill mid-deletion never leaves a half step listed.
        manager = _manager(directory, None, create=True)
        manager.save(
            int(epoch),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(info)
            ),
            force=True,
        )
        manager.wait_until_finished()
        manager.close()
        for old in list_steps(directory)[:-keep] if keep else []:
            _remove_step(directory, old)
    except Exception as e:  # orbax and tensorstore report I/O failures with various types
        raise CheckpointError(
            f"cannot save the checkpoint of epoch {epoch} in {directory}: {_one_line(e)}"
        ) from e
    return directory / str(epoch)


_DELETING = ".deleting-"


def _remove_step(directory: Path, step: int) -> None:
    """Delete a step directory: first an atomic rename that hides it from :func:`list_steps`."""
    doomed = directory / f"{_DELETING}{step}-{os.getpid()}-{time.monotonic_ns()}"
    os.rename(directory / str(step), doomed)
    shutil.rmtree(doomed)


def _remove_abandoned_deletions(directory: Path) -> None:
    """Finish deletions that a killed process started, renamed or (by an older version that
    deleted in place) half-done."""
    if directory.is_dir():
        for leftover in directory.iterdir():
            unfinished = leftover.name.isdigit() and not _complete_step(leftover)
            if leftover.name.startswith(_DELETING) or unfinished:
                shutil.rmtree(leftover, ignore_errors=True)


_OS_ERROR_CODE = re.compile(r"os_error_code=(\d+)")


def _one_line(error: BaseException) -> str:
    """The first line of an error, with the operating system's reason first when tensorstore
    buries it (e.g. "No space left on device") far down its message."""
    text = str(error).strip()
    lines = text.splitlines()
    first = lines[0][:300] if lines else type(error).__name__
    code = _OS_ERROR_CODE.search(text)
    if code:
        return f"{os.strerror(int(code.group(1)))} ({first})"
    if isinstance(error, OSError) and error.strerror and error.strerror not in first:
        return f"{error.strerror} ({first})"
    return first


def _shapes(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    return [
        (jax.tree_util.keystr(path), tuple(leaf.shape), str(np.dtype(leaf.dtype)))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def _describe_sizes(params_shapes: list[tuple[str, tuple[int, ...], str]]) -> str:
    w_shapes = [shape for path, shape, _ in params_shapes if path.endswith("['w']")]
    if not w_shapes or any(len(s) != 2 for s in w_shapes):
        return "unknown layer sizes"
    return "-".join(str(n) for n in (w_shapes[0][0], *(s[1] for s in w_shapes)))


def _check_compatible(
    epoch: int, directory: Path, on_disk: dict[str, Any], target: dict[str, Any]
) -> None:
    """Raises ArchitectureMismatchError if the saved arrays do not fit the target's."""
    saved_params, want_params = _shapes(on_disk["params"]), _shapes(target["params"])
    if saved_params != want_params:
        differences = [
            f"{path} {shape}/{dtype} vs {want_shape}/{want_dtype}"
            for (path, shape, dtype), (_, want_shape, want_dtype) in zip(
                saved_params, want_params, strict=False
            )
            if (shape, dtype) != (want_shape, want_dtype)
        ]
        first = differences[0] if differences else "a different number of layers"
        raise ArchitectureMismatchError(
            f"checkpoint epoch {epoch} in {directory} holds a "
            f"{_describe_sizes(saved_params)} model but this run builds a "
            f"{_describe_sizes(want_params)} model (first difference, saved vs expected: "
            f"params{first})"
        )
    saved_opt, want_opt = _shapes(on_disk["opt_state"]), _shapes(target["opt_state"])
    if saved_opt != want_opt:
        raise ArchitectureMismatchError(
            f"checkpoint epoch {epoch} in {directory} holds an optimizer state of "
            f"{len(saved_opt)} arrays {[s for _, s, _ in saved_opt][:4]}... but this run's "
            f"optimizer has {len(want_opt)} arrays {[s for _, s, _ in want_opt][:4]}...; "
            "was it saved with another optimizer?"
        )


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
    ocp = _ocp()
    want = state_arrays(target)
    skipped: list[tuple[int, str]] = []
    manager = _manager(directory)
    try:
        for epoch in reversed(steps):
            try:
                if not _complete_step(directory / str(epoch)):
                    raise ValueError(
                        f"incomplete: no {_METADATA} (a save or a deletion was interrupted)"
                    )
                on_disk = manager.item_metadata(epoch)["state"]
                if on_disk is None:
                    raise ValueError("no readable array metadata")
            except Exception as e:
                reason = f"unreadable metadata ({_one_line(e)})"
            else:
                _check_compatible(epoch, directory, on_disk, want)
                try:
                    restored = manager.restore(
                        epoch,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(want), meta=ocp.args.JsonRestore()
                        ),
                    )
                    meta = dict(restored["meta"] or {})
                    arrays = restored["state"]
                    if meta.get("sha256") != checksum(arrays):
                        raise ValueError("the arrays do not match the sha256 saved with them")
                    return Restored(_with_arrays(target, arrays), epoch, meta, tuple(skipped))
                except Exception as e:
                    reason = _one_line(e)
            skipped.append((epoch, reason))
            if on_skip is not None:
                on_skip(epoch, reason)
            if quarantine is not None:
                _move_aside(directory / str(epoch), Path(quarantine))
    finally:
        manager.close()
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
    ocp = _ocp()
    manager = _manager(Path(directory))
    try:
        restored = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"] or {})
    finally:
        manager.close()
