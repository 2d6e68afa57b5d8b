"""jaxmlp.sharding in this process (one CPU device): meshes, placement and their checks.

The runs over several devices need the device count fixed before JAX starts, so they live in
subprocesses: see test_distributed.py.
"""

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp import sharding

X = np.random.default_rng(0).uniform(size=(40, 6)).astype(np.float32)
Y = (np.arange(40) % 3).astype(np.int32)


def _fit(mesh, batch_size=8):
    return jaxmlp.fit(
        jax.random.key(1),
        (6, 5, 3),
        X,
        Y,
        optimizer=jaxmlp.optimizer("adam", 1e-2),
        epochs=2,
        batch_size=batch_size,
        mesh=mesh,
    )


def test_mesh_spans_all_devices_on_a_data_axis():
    mesh = sharding.data_parallel_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == jax.device_count()
    assert sharding.describe(mesh).startswith(f"data-parallel over {jax.device_count()} device")


def test_one_device_mesh_trains_exactly_like_no_mesh():
    reference, _ = _fit(None)
    state, history = _fit(sharding.data_parallel_mesh())
    assert [r["epoch"] for r in history] == [1, 2]
    for a, b in zip(jax.tree.leaves(reference.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_replicate_places_every_leaf_and_keeps_static_fields():
    mesh = sharding.data_parallel_mesh()
    state = jaxmlp.create_train_state(jax.random.key(0), (6, 5, 3), jaxmlp.optimizer("sgd", 0.1))
    placed = sharding.replicate((state, X), mesh)
    assert placed[0].optimizer is state.optimizer and placed[0].options == state.options
    for leaf in jax.tree.leaves(placed):
        assert leaf.sharding == sharding.replicated(mesh)
    host = sharding.to_host(placed)
    assert isinstance(host[1], np.ndarray)
    np.testing.assert_array_equal(host[1], X)
    new_state, metrics = jaxmlp.train_epoch(
        *placed, sharding.replicate(Y, mesh), batch_size=8, mesh=mesh
    )
    assert int(new_state.step) == 5 and int(metrics["diverged_at_step"]) == -1


def test_batch_sharding_splits_the_leading_axis():
    mesh = sharding.data_parallel_mesh()
    spec = sharding.batch_sharded(mesh).spec
    assert tuple(spec) == ("data",)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: sharding.data_parallel_mesh([]), ValueError, "devices is empty"),
        (lambda: sharding.data_parallel_mesh(["cpu:0"]), TypeError, "jax.Device"),
        (lambda: sharding.data_parallel_mesh(jax.devices() * 2), ValueError, "more than once"),
        (lambda: sharding.replicate(X, "mesh"), ValueError, "'data' axis"),
        (
            lambda: sharding.replicated(jax.sharding.Mesh(np.array(jax.devices()), ("batch",))),
            ValueError,
            "'data' axis",
        ),
        (lambda: sharding.set_cpu_device_count(0), ValueError, "positive integer"),
        (
            lambda: sharding.initialize_distributed("127.0.0.1:1", 2, 2),
            ValueError,
            "0 <= process_id < 2",
        ),
        (lambda: sharding.initialize_distributed("localhost", 2, 0), ValueError, "host:port"),
        (lambda: sharding.initialize_distributed("127.0.0.1:1", 0, 0), ValueError, ">= 1"),
    ],
)
def test_bad_arguments_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_device_count_cannot_change_after_jax_started():
    jax.devices()  # the backends are up in this process
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        sharding.set_cpu_device_count(jax.device_count() + 3)


def test_mesh_argument_is_checked_by_training():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("model",))
    with pytest.raises(ValueError, match="'data' axis"):
        _fit(mesh)


@pytest.mark.data
@pytest.mark.slow
def test_cli_data_parallel_matches_a_single_device_run(tmp_path):
    """`jaxmlp train --data-parallel` over 2 virtual CPU devices ends where one device does."""
    import json
    import os
    import subprocess
    import sys

    from test_data import _real_root

    data_dir = _real_root("mnist").parent

    def train(name, *extra, devices=1):
        env = dict(
            os.environ,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
            JAXMLP_DATA_DIR=str(data_dir),
        )
        command = [
            sys.executable,
            "-m",
            "jaxmlp",
            "train",
            "--runs-dir",
            str(tmp_path),
            "--name",
            name,
            "--hidden",
            "32",
            "--epochs",
            "2",
            "--train-limit",
            "2000",
            "--test-limit",
            "500",
            "--validation",
            "0",
            "--no-plots",
            "--json",
            *extra,
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    single = train("single")
    parallel = train("parallel", "--data-parallel", devices=2)
    losses = lambda events: [e["loss"] for e in events if e.get("event") == "epoch"]
    np.testing.assert_allclose(losses(parallel), losses(single), rtol=1e-5)
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxmlp",
            "train",
            "--data-parallel",
            "--batch-size",
            "127",
            "--runs-dir",
            str(tmp_path),
            "--name",
            "odd",
        ],
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "does not divide over the 2 devices" in refused.stderr
    assert "Traceback" not in refused.stderr
