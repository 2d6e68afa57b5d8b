"""The public functions inside the caller's own jit, vmap, grad and lax.scan give the numbers of
the plain calls; nothing the caller holds is invalidated; mismatches are refused, not ignored."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp

SIZES = (12, 16, 4)


def _blobs(n=96, features=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    centres = rng.normal(size=(classes, features)) * 2
    return (centres[labels] + rng.normal(size=(n, features))).astype(np.float32), labels


def _state(seed=0, optimizer=None, **options):
    return jaxmlp.create_train_state(
        jax.random.key(seed),
        SIZES,
        optimizer or jaxmlp.optimizer("adam", 1e-2),
        options=jaxmlp.ModelOptions(**options),
    )


# --------------------------------------------------------------------------------------------
# Inside the caller's transformations


def test_train_epoch_inside_jit_equals_the_plain_call():
    x, y = _blobs()
    state = _state(dropout_rate=0.2)
    plain, plain_metrics = jaxmlp.train_epoch(state, x, y, batch_size=20)
    jitted, jitted_metrics = jax.jit(lambda s, x, y: jaxmlp.train_epoch(s, x, y, batch_size=20))(
        state, x, y
    )
    chex.assert_trees_all_equal(plain.params, jitted.params)
    chex.assert_trees_all_equal(plain_metrics, jitted_metrics)


def test_an_ensemble_by_jit_of_vmap_of_train_epoch_equals_each_model_alone():
    x, y = _blobs()
    adam = jaxmlp.optimizer("adam", 1e-2)  # one optimizer object: the states share a structure
    states = [_state(seed, adam) for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    @jax.jit
    def ensemble_epoch(stacked, x, y):
        return jax.vmap(lambda s: jaxmlp.train_epoch(s, x, y, batch_size=32))(stacked)

    stacked, metrics = ensemble_epoch(stacked, x, y)
    chex.assert_shape(metrics["loss"], (3,))
    for index, state in enumerate(states):
        alone, alone_metrics = jaxmlp.train_epoch(state, x, y, batch_size=32)
        together = jax.tree.map(lambda leaf, i=index: leaf[i], stacked.params)
        chex.assert_trees_all_close(together, alone.params, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(metrics["loss"][index], alone_metrics["loss"], rtol=1e-5)


def test_several_epochs_in_one_lax_scan_equal_epochs_in_a_python_loop():
    x, y = _blobs()
    state = _state()
    looped = state
    for _ in range(3):
        looped, _ = jaxmlp.train_epoch(looped, x, y, batch_size=32)

    @jax.jit
    def three_epochs(state, x, y):
        def body(state, _):
            state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=32)
            return state, metrics["loss"]

        return jax.lax.scan(body, state, None, length=3)

    scanned, losses = three_epochs(state, x, y)
    chex.assert_shape(losses, (3,))
    chex.assert_trees_all_close(scanned.params, looped.params, rtol=1e-6, atol=1e-7)


def test_train_step_in_lax_scan_equals_a_python_loop_of_steps():
    x, y = _blobs(64)
    xs, ys = x.reshape(4, 16, -1), y.reshape(4, 16)
    state = _state()
    looped = state
    for xb, yb in zip(xs, ys, strict=True):
        looped, _ = jaxmlp.train_step(looped, xb, yb)
    scanned, metrics = jax.lax.scan(
        lambda s, batch: jaxmlp.train_step(s, *batch), state, (jnp.asarray(xs), jnp.asarray(ys))
    )
    chex.assert_trees_all_close(scanned.params, looped.params, rtol=1e-6, atol=1e-7)
    assert bool(jnp.all(metrics["finite"]))


def test_evaluate_and_predict_inside_jit_and_vmap_equal_the_plain_calls():
    x, y = _blobs()
    state, _ = jaxmlp.train_epoch(_state(activation="tanh"), x, y, batch_size=32)
    plain = jaxmlp.evaluate(state, x, y, batch_size=40)
    jitted = jax.jit(lambda s: jaxmlp.evaluate(s, x, y, batch_size=40))(state)
    assert int(jitted["correct"]) == plain["correct"] and int(jitted["count"]) == plain["count"]
    np.testing.assert_allclose(jitted["loss"], plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(jitted["accuracy"], plain["accuracy"], rtol=1e-6)
    np.testing.assert_array_equal(jax.jit(jaxmlp.predict)(state, x), jaxmlp.predict(state, x))
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), state, state)
    both = jax.vmap(lambda s: jaxmlp.evaluate(s, x, y)["correct"])(stacked)
    np.testing.assert_array_equal(both, [plain["correct"]] * 2)


def test_per_example_gradients_by_vmap_of_grad_average_to_the_batch_gradient():
    x, y = _blobs(10)
    params = jaxmlp.init_mlp(jax.random.key(3), SIZES)
    per_example = jax.vmap(jax.grad(jaxmlp.loss), in_axes=(None, 0, 0))(params, x, y)
    chex.assert_shape(per_example[0]["w"], (10, *params[0]["w"].shape))
    batch = jax.grad(jaxmlp.loss)(params, x, y)
    chex.assert_trees_all_close(
        jax.tree.map(lambda g: g.mean(0), per_example), batch, rtol=1e-5, atol=1e-7
    )
    # The hand-derived backprop takes one example too.
    by_hand = jax.vmap(lambda xi, yi: jaxmlp.backprop(params, xi, yi)[1])(x, y)
    chex.assert_trees_all_close(by_hand, per_example, rtol=1e-5, atol=1e-7)


def test_one_example_gives_the_row_of_the_batch():
    x, y = _blobs(5)
    params = jaxmlp.init_mlp(jax.random.key(4), SIZES)
    logits = jaxmlp.forward(params, x)
    chex.assert_shape(jaxmlp.forward(params, x[2]), (4,))
    np.testing.assert_allclose(jaxmlp.forward(params, x[2]), logits[2], rtol=1e-6)
    np.testing.assert_allclose(
        jaxmlp.loss(params, x[2], y[2]),
        jaxmlp.cross_entropy(logits[2:3], y[2:3]),
        rtol=1e-6,
    )
    one_hot = jax.nn.one_hot(y[2], 4)
    np.testing.assert_allclose(
        jaxmlp.loss(params, x[2], one_hot), jaxmlp.loss(params, x[2], y[2]), rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"labels has shape \(3,\); expected \(\) class ids"):
        jaxmlp.loss(params, x[2], np.zeros(3, np.float32))


# --------------------------------------------------------------------------------------------
# The caller's arrays stay alive


def test_one_initialisation_starts_several_fits_and_stays_valid():
    x, y = _blobs()
    init = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    kept = jax.tree.map(np.asarray, init)
    finals = {}
    for name in ("sgd", "adam"):
        optimizer = jaxmlp.optimizer(name, 1e-2)
        state = jaxmlp.create_train_state(jax.random.key(1), SIZES, optimizer, params=init)
        state, _ = jaxmlp.fit(x_train=x, y_train=y, state=state, epochs=2, batch_size=32)
        finals[name] = state.params
        chex.assert_trees_all_equal(jax.tree.map(np.asarray, init), kept)  # still alive
    assert not np.allclose(finals["sgd"][0]["w"], finals["adam"][0]["w"])


def test_states_kept_by_the_epoch_callback_stay_valid():
    x, y = _blobs()
    snapshots = []
    jaxmlp.fit(
        jax.random.key(0),
        SIZES,
        x,
        y,
        optimizer=jaxmlp.optimizer("adam", 1e-2),
        epochs=3,
        batch_size=32,
        on_epoch_end=lambda state, record: snapshots.append(state),
    )
    steps = [int(s.step) for s in snapshots]  # would raise if fit had donated them
    assert steps == [3, 6, 9]
    assert not np.allclose(snapshots[0].params[0]["w"], snapshots[2].params[0]["w"])


def test_a_state_the_caller_donated_gives_a_jaxmlp_error_not_xla_s(tmp_path):
    x, y = _blobs()
    state = _state()
    donating = jax.jit(lambda s: jaxmlp.train_epoch(s, x, y, batch_size=32), donate_argnums=0)
    donating(state)
    for call in (
        lambda: jaxmlp.train_epoch(state, x, y, batch_size=32),
        lambda: jaxmlp.evaluate(state, x, y),
        lambda: jaxmlp.fit(x_train=x, y_train=y, state=state, epochs=1, batch_size=32),
        lambda: jaxmlp.checkpoints.save(tmp_path, 1, state),
    ):
        with pytest.raises(ValueError, match=r"donated to an earlier jitted call.*use the value"):
            call()


# --------------------------------------------------------------------------------------------
# No silent mismatches


def _tanh_problem():
    """A tanh teacher whose labels a tanh student learns; scored as ReLU it does worse."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    teacher = jaxmlp.init_mlp(jax.random.key(11), SIZES)
    y = np.asarray(jnp.argmax(jaxmlp.forward(teacher, x, activation="tanh"), -1), np.int32)
    state = jaxmlp.create_train_state(
        jax.random.key(11),
        SIZES,
        jaxmlp.optimizer("sgd", 1e-30),
        options=jaxmlp.ModelOptions(activation="tanh"),
        params=teacher,
    )
    return state, x, y


def test_evaluate_and_predict_of_a_state_use_its_own_options():
    state, x, y = _tanh_problem()
    own = jaxmlp.evaluate(state, x, y)
    assert own["accuracy"] == 1.0  # the teacher scores its own labels perfectly
    as_relu = jaxmlp.evaluate(state.params, x, y)  # bare parameters: ReLU by default
    assert as_relu["accuracy"] < 0.9
    assert jaxmlp.evaluate(state.params, x, y, options=state.options) == own
    np.testing.assert_array_equal(jaxmlp.predict(state, x), y)
    with pytest.raises(ValueError, match="activation='relu' but the state was trained with"):
        jaxmlp.predict(state, x, activation="relu")


def test_fit_refuses_arguments_that_contradict_the_state():
    x, y = _blobs()
    adam = jaxmlp.optimizer("adam", 1e-3)
    state = _state(optimizer=adam)
    common = dict(x_train=x, y_train=y, state=state, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="optimizer .another object than the state's"):
        jaxmlp.fit(optimizer=jaxmlp.optimizer("sgd", 0.1), **common)
    with pytest.raises(
        ValueError, match=r"layer_sizes=\(12, 999, 4\) .the state's model is 12-16-4"
    ):
        jaxmlp.fit(layer_sizes=(12, 999, 4), **common)
    with pytest.raises(ValueError, match=r"dropout_rate=0.5 .the state's is 0.0"):
        jaxmlp.fit(dropout_rate=0.5, **common)
    # The state's own optimizer and sizes are accepted.
    jaxmlp.fit(optimizer=adam, layer_sizes=SIZES, **common)


def test_fit_continues_a_history_and_stops_when_the_callback_says_so():
    x, y = _blobs()
    state, history = jaxmlp.fit(
        jax.random.key(0),
        SIZES,
        x,
        y,
        optimizer=jaxmlp.optimizer("adam", 1e-2),
        epochs=2,
        batch_size=32,
    )
    seen = []
    state, history = jaxmlp.fit(
        x_train=x,
        y_train=y,
        state=state,
        history=history,
        epochs=5,
        batch_size=32,
        on_epoch_end=lambda s, record: record["epoch"] == 4,
        progress=lambda epoch, done, total: seen.append((epoch, done, total)),
    )
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert int(state.step) == 4 * 3
    assert {epoch for epoch, _, _ in seen} == {3, 4} and all(t == 3 for _, _, t in seen)


@pytest.mark.parametrize(
    "key, shown",
    [(0, "int 0"), (np.random.default_rng(0), "a numpy Generator"), ("seed", "str 'seed'")],
)
def test_a_key_that_is_not_a_jax_key_names_the_argument_and_the_fix(key, shown):
    for call, argument in (
        (lambda: jaxmlp.init_mlp(key, SIZES), "key"),
        (lambda: jaxmlp.create_train_state(key, SIZES, jaxmlp.optimizer("sgd", 0.1)), "key"),
        (
            lambda: jaxmlp.forward(
                jaxmlp.init_mlp(jax.random.key(0), SIZES),
                np.zeros((2, 12), np.float32),
                dropout_rate=0.5,
                key=key,
            ),
            "key",
        ),
    ):
        with pytest.raises(
            TypeError,
            match=rf"{argument} must be a JAX PRNG key.*{shown}.*"
            r"jax.random.key\(seed\)",
        ):
            call()


def test_raw_pixel_training_images_get_a_warning():
    x, y = _blobs(64, 16, 4)
    raw = np.round(np.clip(x * 40 + 100, 0, 255)).astype(np.float32)
    state = jaxmlp.create_train_state(jax.random.key(0), (16, 8, 4), jaxmlp.optimizer("sgd", 0.1))
    with pytest.warns(UserWarning, match=r"looks like raw 0-255 pixel values.*x / 255"):
        jaxmlp.train_epoch(state, raw, y, batch_size=32)
    with pytest.warns(UserWarning, match="x_train looks like raw 0-255"):
        jaxmlp.fit(x_train=raw, y_train=y, state=state, epochs=1, batch_size=32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxmlp.train_epoch(state, raw / 255, y, batch_size=32)  # scaled: no warning


def test_float64_data_and_float32_parameters_are_reported_not_promoted(x64):
    x, y = _blobs()
    params32 = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    params64 = jaxmlp.init_mlp(jax.random.key(0), SIZES, dtype=jnp.float64)
    with pytest.raises(TypeError, match="x has dtype float64 but the parameters are float32"):
        jaxmlp.loss(params32, x.astype(np.float64), y)
    with pytest.raises(TypeError, match="x has dtype float32 but the parameters are float64"):
        jaxmlp.forward(params64, x)
    with pytest.raises(TypeError, match="images has dtype float64 but the parameters are float32"):
        jaxmlp.evaluate(params32, x.astype(np.float64), y)
    assert jaxmlp.loss(params64, x.astype(np.float64), y).dtype == jnp.float64


def test_label_and_shape_errors_name_the_model_s_own_sizes():
    params = jaxmlp.init_mlp(jax.random.key(0), (12, 8, 5))
    x = np.zeros((3, 12), np.float32)
    with pytest.raises(ValueError, match="the model's last layer has 5 outputs"):
        jaxmlp.loss(params, x, np.array([0, 7, 1]))
    with pytest.raises(ValueError, match="the model's first layer has 12 inputs"):
        jaxmlp.forward(params, np.zeros((3, 10), np.float32))


# --------------------------------------------------------------------------------------------
# Everything documented is reachable


def test_documented_submodules_are_attributes_of_the_package():
    code = (
        "import jaxmlp, sys\n"
        "assert 'jaxmlp.data' not in sys.modules and 'jaxmlp.checkpoints' not in sys.modules\n"
        "mesh = jaxmlp.sharding.data_parallel_mesh()\n"
        "assert mesh.axis_names == ('data',)\n"
        "assert callable(jaxmlp.data.load) and callable(jaxmlp.checkpoints.save)\n"
        "assert callable(jaxmlp.multi.stack_states) and callable(jaxmlp.plots.plot_history)\n"
        "assert 'sharding' in dir(jaxmlp)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
