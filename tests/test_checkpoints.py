"""The checkpoint format on its own (no data, no CLI): what a step directory holds, what a killed
save leaves, and that saving keeps nothing behind."""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import textwrap
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


def test_also_keep_holds_an_epoch_out_of_the_rotation_until_it_is_dropped(tmp_path):
    state = make_state()
    for epoch in (1, 2, 3, 4):
        checkpoints.save(tmp_path, epoch, state, keep=2, also_keep={2})
    assert checkpoints.list_steps(tmp_path) == [2, 3, 4]
    # The best epoch moves on: the one held before rotates out at the next save.
    checkpoints.save(tmp_path, 5, state, keep=2, also_keep=[4])
    assert checkpoints.list_steps(tmp_path) == [4, 5]
    with pytest.raises(TypeError, match="also_keep"):
        checkpoints.save(tmp_path, 6, state, also_keep=4)


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


# --------------------------------------------------------------------------------------------
# The public API: restore a given epoch, continue training, parameters alone, wrong arguments

SMALL = (6, 5, 3)


def small_state(seed: int = 0, sizes=SMALL, dtype=jnp.float32) -> jaxmlp.TrainState:
    return jaxmlp.create_train_state(
        jax.random.key(seed), sizes, jaxmlp.optimizer("adam", 1e-2), dtype=dtype
    )


def small_data(n: int = 48) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(10), (n, SMALL[0]))
    y = jax.random.randint(jax.random.key(11), (n,), 0, SMALL[-1])
    return x, y


def train_and_save(directory: Path, epochs: int) -> list[jaxmlp.TrainState]:
    """Trains a small model ``epochs`` epochs, saving each (all kept); returns a copy of the
    state after each epoch (train_epoch donates the state it is given)."""
    x, y = small_data()
    state, copies = small_state(), []
    for epoch in range(1, epochs + 1):
        state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=16)
        checkpoints.save(directory, epoch, state, meta={"loss": float(metrics["loss"])}, keep=0)
        copies.append(jax.tree.map(np.array, state))
    return copies


FORMAT_2_RUN = Path(__file__).parent / "assets" / "checkpoint-format-2"


def test_a_checkpoint_directory_written_by_an_earlier_version_restores_bit_for_bit(tmp_path):
    # Written by jaxmlp at commit 12f372b: a 6-5-3 model trained with adam, epochs 1 and 2.
    run = shutil.copytree(FORMAT_2_RUN, tmp_path / "checkpoints")
    assert checkpoints.list_steps(run) == [1, 2]
    assert checkpoints.restore(run, small_state(seed=7)).epoch == 2
    for epoch in (1, 2):
        restored = checkpoints.restore(run, small_state(seed=7), epoch=epoch)
        assert restored.meta["history"][-1]["epoch"] == epoch
        assert int(restored.state.step) == 3 * epoch
        leaves = jax.tree_util.tree_leaves_with_path(checkpoints.state_arrays(restored.state))
        with np.load(run / str(epoch) / checkpoints.ARRAYS_FILE) as stored:
            assert len(leaves) == len(stored.files) == 15  # 4 params, 9 adam, step, key
            for path, leaf in leaves:
                saved = stored[jax.tree_util.keystr(path, simple=True, separator="/")]
                assert np.asarray(leaf).dtype == saved.dtype
                assert np.asarray(leaf).tobytes() == saved.tobytes()


def test_restore_gives_the_epoch_asked_for_or_else_the_latest(tmp_path):
    after = train_and_save(tmp_path, 3)
    restored = checkpoints.restore(tmp_path, small_state(seed=7), epoch=2)
    assert restored.epoch == 2 and restored.skipped == ()
    assert restored.meta["epoch"] == 2 and restored.meta["layer_sizes"] == list(SMALL)
    assert int(restored.state.step) == 6  # 48 examples in batches of 16, two epochs
    assert_same_arrays(restored.state, after[1])
    # The epochs differ, so the comparison above could tell them apart.
    assert not np.array_equal(after[1].params[0]["w"], after[2].params[0]["w"])
    latest = checkpoints.restore(tmp_path, small_state(seed=7))
    assert latest.epoch == 3
    assert_same_arrays(latest.state, after[2])


def test_training_continued_from_a_restored_epoch_is_the_uninterrupted_run(tmp_path):
    after = train_and_save(tmp_path, 3)
    target = small_state(seed=7)
    restored = checkpoints.restore(tmp_path, target, epoch=2)
    # The static fields are the target's: they are not in the file.
    assert restored.state.optimizer is target.optimizer
    assert restored.state.options is target.options
    x, y = small_data()
    continued, _ = jaxmlp.train_epoch(restored.state, x, y, batch_size=16)
    assert_same_arrays(continued, after[2])


def test_a_missing_epoch_is_an_error_that_names_the_saved_epochs(tmp_path):
    train_and_save(tmp_path, 3)
    target = small_state()
    with pytest.raises(checkpoints.CheckpointError) as caught:
        checkpoints.restore(tmp_path, target, epoch=7)
    assert (
        str(caught.value) == f"no checkpoint of epoch 7 in {tmp_path}; the saved epochs are 1, 2, 3"
    )
    with pytest.raises(checkpoints.CheckpointError, match="saved epochs are 1, 2, 3"):
        checkpoints.read_meta(tmp_path, 7)
    with pytest.raises(
        checkpoints.CheckpointError, match=r"no checkpoint in .* \(no such directory\)"
    ):
        checkpoints.restore(tmp_path / "absent", target)
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match=r"\(the directory holds none\)"):
        checkpoints.restore(tmp_path / "empty", target, epoch=1)
    assert checkpoints.restore_latest(tmp_path / "empty", target) is None


def test_a_damaged_epoch_asked_for_is_refused_and_the_latest_still_restores(tmp_path):
    after = train_and_save(tmp_path, 3)
    arrays_file = tmp_path / "2" / checkpoints.ARRAYS_FILE
    with np.load(arrays_file) as stored:
        arrays = dict(stored)
    arrays["params/0/w"][0, 0] += 1.0  # a well-formed file whose values are not the saved ones
    with open(arrays_file, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(checkpoints.CheckpointError) as caught:
        checkpoints.restore(tmp_path, small_state(), epoch=2)
    assert str(caught.value) == (
        f"checkpoint epoch 2 in {tmp_path} is unusable: "
        "the arrays do not match the sha256 saved with them"
    )
    assert_same_arrays(checkpoints.restore(tmp_path, small_state()).state, after[2])


def test_an_epoch_of_another_architecture_is_refused_naming_both(tmp_path):
    checkpoints.save(tmp_path, 1, small_state())
    with pytest.raises(checkpoints.ArchitectureMismatchError, match="6-5-3 model.*6-4-3 model"):
        checkpoints.restore(tmp_path, small_state(sizes=(6, 4, 3)), epoch=1)


def random_params(dtype) -> list[dict[str, jax.Array]]:
    """Parameters with random biases too (init_mlp's are zero), all of ``dtype``."""
    params = jaxmlp.init_mlp(jax.random.key(3), SMALL, dtype=dtype)
    keys = jax.random.split(jax.random.key(4), len(params))
    return [
        {"w": layer["w"], "b": jax.random.normal(k, layer["b"].shape, dtype)}
        for layer, k in zip(params, keys, strict=True)
    ]


def assert_bitwise_equal_params(loaded, params) -> None:
    assert isinstance(loaded, list) and len(loaded) == len(params)
    for got, want in zip(loaded, params, strict=True):
        assert set(got) == {"w", "b"}
        for name in ("w", "b"):
            assert isinstance(got[name], jax.Array)
            assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
            assert np.asarray(got[name]).tobytes() == np.asarray(want[name]).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_params_round_trip_bit_for_bit_in_one_file(tmp_path, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = random_params(jnp.dtype(dtype))
        if dtype == "float64":  # values a float32 round trip would change
            assert not np.array_equal(params[0]["w"], params[0]["w"].astype(jnp.float32))
        path = checkpoints.save_params(tmp_path / "model.npz", params, meta={"note": "x"})
        assert path == tmp_path / "model.npz"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temporary left
        assert_bitwise_equal_params(checkpoints.load_params(path), params)
        header = checkpoints.read_params_meta(path)
        assert header["format"] == "jaxmlp-params" and header["version"] == 1
        assert header["layer_sizes"] == list(SMALL) and header["dtype"] == dtype
        assert header["sha256"] == checkpoints.checksum(params) and header["note"] == "x"
        with np.load(path) as stored:  # plain NumPy reads it too
            assert stored["params/1/w"].shape == (5, 3)


def test_float64_params_are_not_loaded_rounded_while_64_bit_types_are_off(tmp_path):
    with jax.enable_x64(True):
        path = checkpoints.save_params(tmp_path / "model.npz", random_params(jnp.float64))
    with pytest.raises(ValueError, match="float64 parameters but JAX has 64-bit types disabled"):
        checkpoints.load_params(path)


def test_saving_params_again_replaces_the_file_and_a_failed_save_keeps_the_old_one(
    tmp_path, monkeypatch
):
    path = tmp_path / "model.npz"
    checkpoints.save_params(path, random_params(jnp.float32))
    newer = jaxmlp.init_mlp(jax.random.key(5), SMALL)
    checkpoints.save_params(path, newer)
    assert_bitwise_equal_params(checkpoints.load_params(path), newer)

    def disk_full(file, **arrays):
        file.write(b"PK")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file.name)

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(checkpoints.CheckpointError, match="No space left on device"):
        checkpoints.save_params(path, random_params(jnp.float32))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    assert_bitwise_equal_params(checkpoints.load_params(path), newer)


def _flip_a_weight_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    weights = np.asarray(checkpoints.load_params(path)[0]["w"]).tobytes()
    at = data.find(weights) + len(weights) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_a_weight(path: Path) -> None:
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays["params/0/w"][0, 0] += 1.0
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_npy_array(path: Path) -> None:
    with open(path, "wb") as f:  # np.save(path) would write model.npz.npy beside it
        np.save(f, np.zeros(3))


def _checkpoint_arrays(path: Path) -> None:
    step = checkpoints.save(path.parent / "ckpt", 1, small_state())
    path.write_bytes((step / checkpoints.ARRAYS_FILE).read_bytes())


DAMAGES = {
    "a flipped weight bit": (_flip_a_weight_byte, r"is damaged: Bad CRC-32 for file 'params/0/w"),
    "a rewritten weight": (_rewrite_a_weight, "is damaged: the arrays do not match the sha256"),
    "cut in half": (_cut_in_half, r"not a readable \.npz archive.*damaged or cut short"),
    "an empty file": (lambda p: p.write_bytes(b""), r"not a readable \.npz archive"),
    "a text file": (lambda p: p.write_text("w,b\n1,2\n"), r"not a readable \.npz archive"),
    "a .npy array": (_one_npy_array, "a .npy array, not an .npz"),
    "a checkpoint's arrays": (_checkpoint_arrays, "no header.*looks like a checkpoint's arrays"),
    "removed": (lambda p: p.unlink(), "^no params file at "),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_or_foreign_params_file_is_refused(tmp_path, damage):
    path = checkpoints.save_params(tmp_path / "model.npz", random_params(jnp.float32))
    make_damage, message = DAMAGES[damage]
    make_damage(path)
    with pytest.raises(checkpoints.CheckpointError, match=message):
        checkpoints.load_params(path)


def test_a_params_file_whose_header_does_not_match_its_arrays_is_refused(tmp_path):
    path = checkpoints.save_params(tmp_path / "model.npz", random_params(jnp.float32))
    with np.load(path) as stored:
        arrays = dict(stored)
    header = json.loads(str(arrays["header"]))
    header["layer_sizes"] = [6, 4, 3]
    arrays["header"] = np.array(json.dumps(header))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(checkpoints.CheckpointError, match=r"\(6, 5, 3\) model, its header says"):
        checkpoints.load_params(path)


def test_the_module_example_runs_and_says_what_it_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = checkpoints.__doc__.split("::\n", 1)[1].split("\nThe continued run", 1)[0]
    names: dict = {}
    exec(textwrap.dedent(example), names)
    assert names["restored"].epoch == 3 and "loss" in names["restored"].meta
    assert checkpoints.list_steps("run/checkpoints") == [3, 4, 5]
    assert int(names["state"].step) == 5 * 4  # 64 examples in batches of 16, five epochs
    assert_bitwise_equal_params(names["params"], names["state"].params)
    assert names["logits"].shape == (64, 3)


WRONG_ARGUMENTS = {
    "params as target": (
        lambda d, s: checkpoints.restore(d, s.params),
        TypeError,
        "target must be a jaxmlp.TrainState, such as jaxmlp.create_train_state.*got list; "
        "for parameters alone use save_params",
    ),
    "float epoch": (
        lambda d, s: checkpoints.restore(d, s, epoch=1.5),
        TypeError,
        "epoch must be an int >= 0, got float 1.5",
    ),
    "bool epoch": (
        lambda d, s: checkpoints.save(d, True, s),
        TypeError,
        "epoch must be an int >= 0, got bool True",
    ),
    "negative epoch": (
        lambda d, s: checkpoints.save(d, -1, s),
        ValueError,
        "epoch=-1 is invalid; expected an int >= 0",
    ),
    "string epoch": (
        lambda d, s: checkpoints.read_meta(d, "1"),
        TypeError,
        "epoch must be an int >= 0, got str '1'",
    ),
    "negative keep": (
        lambda d, s: checkpoints.save(d, 1, s, keep=-1),
        ValueError,
        "keep=-1 is invalid; expected an int >= 0",
    ),
    "params as state": (
        lambda d, s: checkpoints.save(d, 1, s.params),
        TypeError,
        "state must be a jaxmlp.TrainState.*got list",
    ),
    "reserved meta key": (
        lambda d, s: checkpoints.save(d, 1, s, meta={"sha256": "0", "note": 1}),
        ValueError,
        r"meta has the keys \['sha256'\], which the file format sets itself",
    ),
    "meta not a dict": (
        lambda d, s: checkpoints.save(d, 1, s, meta=[("note", 1)]),
        TypeError,
        "meta must be a dict of JSON values or None, got list",
    ),
    "directory not a path": (
        lambda d, s: checkpoints.save(1, 1, s),
        TypeError,
        "directory must be a path .*, got int 1",
    ),
    "on_skip not callable": (
        lambda d, s: checkpoints.restore_latest(d, s, on_skip="print"),
        TypeError,
        "on_skip must be a function on_skip.epoch, reason. or None, got str",
    ),
    "state as params": (
        lambda d, s: checkpoints.save_params(d / "p.npz", s),
        TypeError,
        "params must be a list of .* layers, got a TrainState: pass state.params",
    ),
    "not a parameter list": (
        lambda d, s: checkpoints.save_params(d / "p.npz", [{"w": s.params[0]["w"]}]),
        TypeError,
        r"params\[0\] must be a dict with keys 'w' and 'b'",
    ),
    "reserved params meta key": (
        lambda d, s: checkpoints.save_params(d / "p.npz", s.params, meta={"version": 2}),
        ValueError,
        r"meta has the keys \['version'\]",
    ),
    "path not a path": (
        lambda d, s: checkpoints.load_params(None),
        TypeError,
        "path must be a path .*, got NoneType None",
    ),
}


@pytest.mark.parametrize("mistake", WRONG_ARGUMENTS)
def test_wrong_arguments_are_named_with_what_was_expected(tmp_path, mistake):
    call, error, message = WRONG_ARGUMENTS[mistake]
    checkpoints.save(tmp_path, 1, small_state())
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error, match=message):
        call(tmp_path, small_state())
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_epochs_may_be_numpy_ints_or_integer_scalar_arrays(tmp_path):
    state = small_state()
    checkpoints.save(tmp_path, np.int64(2), state)
    checkpoints.save(tmp_path, jnp.asarray(3), state)
    assert checkpoints.list_steps(tmp_path) == [2, 3]
    assert checkpoints.restore(tmp_path, small_state(), epoch=np.int32(2)).epoch == 2
