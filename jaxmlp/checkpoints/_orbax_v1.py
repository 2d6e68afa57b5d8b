"""Reading checkpoints of format 1, which earlier versions of :mod:`jaxmlp.checkpoints` wrote.

A format-1 step is a directory written by orbax's ``CheckpointManager`` with two items:
``state`` (a ``StandardSave`` of :func:`jaxmlp.checkpoints.state_arrays`) and ``meta`` (a
``JsonSave`` of the metadata). A finished step holds :data:`METADATA_FILE`; a step being written
has a name matching :data:`TMP_NAME`. Read only: new checkpoints are written in format 2.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

# A finished step of format 1 holds this file; its temporary directories are named so.
METADATA_FILE = "_CHECKPOINT_METADATA"
TMP_NAME = re.compile(r"^\d+\.orbax-checkpoint-tmp-")


def is_step(step_dir: Path) -> bool:
    """Whether ``step_dir`` is a finished step of format 1."""
    return (step_dir / METADATA_FILE).is_file()


def open_manager(directory: Path):
    """``(orbax.checkpoint, manager)`` for the steps in ``directory``; close the manager after
    use."""
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


def array_metadata(step_dir: Path) -> Any:
    """orbax's metadata (shape, dtype) of every saved array, in the saved tree."""
    _, manager = open_manager(step_dir.parent)
    try:
        on_disk = manager.item_metadata(int(step_dir.name))["state"]
        if on_disk is None:
            raise ValueError("no readable array metadata")
        return on_disk
    finally:
        manager.close()


def read_meta(step_dir: Path) -> dict[str, Any]:
    """The step's JSON metadata (no arrays are read)."""
    ocp, manager = open_manager(step_dir.parent)
    try:
        restored = manager.restore(
            int(step_dir.name), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored["meta"] or {})
    finally:
        manager.close()


def restore(step_dir: Path, want: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arrays, meta)``: the step's arrays in ``want``'s tree, dtypes and shapes, and its
    JSON metadata."""
    ocp, manager = open_manager(step_dir.parent)
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
