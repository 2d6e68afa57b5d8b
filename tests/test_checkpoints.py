"""The checkpoint format on its own (no data, no CLI): what a step directory holds, what a killed
save leaves, checkpoints of the earlier orbax format, and that saving keeps nothing behind."""

from __future__ import annotations

import errno
import gc
import json
import os
import tracemalloc
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import checkpoints


def make_state(seed: int = 0, hidden: int = 16, dtype=jnp.float32) -> jaxmlp.TrainState:
    return jaxmlp.create_train_state(
        jax.random.key(seed), (784, hidden, 10), jaxmlp.optimizer("adam", 1e-3), dtype=dtype
    )


def assert_same_arrays(a: jaxmlp.TrainState, b: jaxmlp.TrainState) -> None:
    leaves_a = jax.tree.leaves(checkpoints.state_arrays(a))
    leaves_b = jax.tree.leaves(checkpoints.state_arrays(b))
    for u, v in zip(leaves_a, leaves_b, strict=True):
        assert np.asarray(u).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_a_step_is_two_files_and_restores_exactly(tmp_path):
    state = make_state(seed=1)
    path = checkpoints.save(tmp_path, 7, state, meta={"history": [{"epoch": 7, "loss": 0.5}]})
    assert path == tmp_path / "7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7"]
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "meta.json"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format"] == checkpoints.FORMAT_VERSION == 2
    assert meta["epoch"] == 7 and meta["layer_sizes"] == [784, 16, 10]
    assert ["params/0/w", "float32", [784, 16]] in meta["arrays"]
    assert checkpoints.read_meta(tmp_path, 7) == meta

    restored = checkpoints.restore_latest(tmp_path, make_state(seed=2))
    assert restored.epoch == 7 and restored.skipped == ()
    assert restored.meta["history"] == [{"epoch": 7, "loss": 0.5}]
    assert_same_arrays(restored.state, state)


def test_bfloat16_arrays_restore_as_bfloat16(tmp_path):
    state = make_state(seed=3, dtype=jnp.bfloat16)
    checkpoints.save(tmp_path, 1, state)
    restored = checkpoints.restore_latest(tmp_path, make_state(dtype=jnp.bfloat16))
    assert restored.state.params[0]["w"].dtype == jnp.bfloat16
    assert_same_arrays(restored.state, state)


def test_only_the_newest_steps_are_kept_and_leftovers_of_killed_saves_are_removed(tmp_path):
    state = make_state()
    for epoch in (1, 2, 3):
        checkpoints.save(tmp_path, epoch, state, keep=2)
    assert checkpoints.list_steps(tmp_path) == [2, 3]
    # What kills leave: a save part-way (hidden .tmp-), a deletion part-way (hidden
    # .deleting-), and a numbered step without its meta.json (deleted in place part-way).
    (tmp_path / ".tmp-4-12345").mkdir()
    (tmp_path / ".tmp-4-12345" / "arrays.npz").write_bytes(b"partial")
    (tmp_path / ".deleting-1-12345-1").mkdir()
    (tmp_path / "3" / "meta.json").unlink()
    assert checkpoints.list_steps(tmp_path) == [2]
    checkpoints.save(tmp_path, 4, state, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4"]


def test_saving_an_epoch_again_replaces_it(tmp_path):
    checkpoints.save(tmp_path, 1, make_state(seed=1))
    newer = make_state(seed=2)
    checkpoints.save(tmp_path, 1, newer)
    assert checkpoints.list_steps(tmp_path) == [1]
    assert_same_arrays(checkpoints.restore_latest(tmp_path, make_state()).state, newer)


def test_a_failed_save_leaves_no_trace_and_says_why_first(tmp_path, monkeypatch):
    checkpoints.save(tmp_path, 1, make_state())

    def disk_full(file, **arrays):
        file.write(b"PK")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file.name)

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(checkpoints.CheckpointError) as caught:
        checkpoints.save(tmp_path, 2, make_state())
    assert str(caught.value).startswith(
        f"cannot save the checkpoint of epoch 2 in {tmp_path}: No space left on device: "
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    monkeypatch.undo()
    with pytest.raises(TypeError):  # a caller's meta that JSON cannot hold: nothing is written
        checkpoints.save(tmp_path, 2, make_state(), meta={"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def _save_format_1(directory: Path, epoch: int, state: jaxmlp.TrainState, meta: dict) -> None:
    """A checkpoint as jaxmlp wrote it before format 2: orbax items ``state`` and ``meta``."""
    import orbax.checkpoint as ocp

    arrays = checkpoints.state_arrays(state)
    info = {"format": 1, "epoch": epoch, "sha256": checkpoints.checksum(arrays), **meta}
    manager = ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True),
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )
    manager.save(
        epoch,
        args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(info)),
    )
    manager.wait_until_finished()
    manager.close()


def test_checkpoints_of_format_1_are_still_read(tmp_path):
    old = make_state(seed=5)
    _save_format_1(tmp_path, 1, old, {"history": [{"epoch": 1}]})
    assert checkpoints.list_steps(tmp_path) == [1]
    assert checkpoints.read_meta(tmp_path, 1)["history"] == [{"epoch": 1}]
    restored = checkpoints.restore_latest(tmp_path, make_state())
    assert restored.epoch == 1 and restored.meta["format"] == 1
    assert_same_arrays(restored.state, old)
    with pytest.raises(checkpoints.ArchitectureMismatchError, match="784-16-10.*784-32-10"):
        checkpoints.restore_latest(tmp_path, make_state(hidden=32))
    # A run resumed from it goes on in format 2, next to it.
    newer = make_state(seed=6)
    checkpoints.save(tmp_path, 2, newer)
    assert checkpoints.list_steps(tmp_path) == [1, 2]
    assert_same_arrays(checkpoints.restore_latest(tmp_path, make_state()).state, newer)


def test_saving_keeps_no_python_memory_per_checkpoint(tmp_path):
    # orbax kept ~22 kB of Python objects per save (tensorstore's bindings leaked the metric
    # and spec dicts it returned), ~40 kB of RSS per save in all.
    state = make_state()
    history: list[dict] = []
    for epoch in range(1, 11):
        checkpoints.save(tmp_path, epoch, state)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for epoch in range(11, 111):
            checkpoints.save(tmp_path, epoch, state, meta={"history": history})
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 100 * 1024, f"{grown / 100:.0f} bytes per save"
