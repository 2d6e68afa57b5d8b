"""Training: the scan epoch, exact evaluation, fit, one compile per configuration."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.training import _epoch, _regularizers


def _separable(n=200, features=2, seed=0):
    """Two well-separated Gaussian blobs: a linear boundary classifies them perfectly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int32)
    centres = np.where(labels[:, None] == 1, 3.0, -3.0)
    images = (centres + rng.normal(size=(n, features))).astype(np.float32)
    return images, labels


def _blobs(n, features, classes, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    centres = rng.normal(size=(classes, features)) * 3
    return (centres[labels] + rng.normal(size=(n, features))).astype(np.float32), labels


def test_linearly_separable_problem_is_fit_perfectly():
    x, y = _separable()
    state, history = jaxmlp.fit(
        jax.random.key(0),
        (2, 8, 2),
        x,
        y,
        optimizer=jaxmlp.optimizer("adam", 0.05),
        epochs=5,
        batch_size=20,
    )
    assert jaxmlp.evaluate(state.params, x, y)["accuracy"] == 1.0
    assert history[-1]["loss"] < history[0]["loss"]


def test_softmax_regression_is_a_single_layer():
    x, y = _separable(features=3)
    state, _ = jaxmlp.fit(
        jax.random.key(0),
        (3, 2),
        x,
        y,
        optimizer=jaxmlp.optimizer("sgd", 0.5),
        epochs=3,
        batch_size=50,
        init="normal",
    )
    assert len(state.params) == 1
    assert jaxmlp.evaluate(state.params, x, y)["accuracy"] == 1.0


def test_history_records():
    x, y = _blobs(300, 5, 3)
    _, history = jaxmlp.fit(
        jax.random.key(1),
        (5, 7, 3),
        x,
        y,
        optimizer=jaxmlp.optimizer("sgd", 0.1),
        epochs=3,
        batch_size=32,
        validation_data=(x[:50], y[:50]),
    )
    assert [record["epoch"] for record in history] == [1, 2, 3]
    for record in history:
        assert {
            "loss",
            "train_accuracy",
            "validation_accuracy",
            "validation_loss",
            "seconds",
        } <= set(record)
        assert 0.0 <= record["train_accuracy"] <= 1.0 and record["seconds"] > 0
    assert (
        "compile_seconds" in history[0] and history[0]["seconds"] >= history[0]["compile_seconds"]
    )


def test_train_epoch_compiles_once_across_epochs():
    x, y = _blobs(130, 4, 3)
    # train_epoch inside the caller's own jit: traced once, however many epochs run.
    counted = jax.jit(
        chex.assert_max_traces(jaxmlp.train_epoch, n=1),
        static_argnames=("batch_size", "progress", "progress_every", "mesh"),
    )
    state = jaxmlp.create_train_state(jax.random.key(0), (4, 6, 3), jaxmlp.optimizer("adam", 1e-2))
    x, y = jnp.asarray(x), jnp.asarray(y)
    for _ in range(4):  # a second trace would raise inside chex
        state, metrics = counted(state, x, y, batch_size=32)
    assert int(state.step) == 4 * 5  # ceil(130 / 32) steps per epoch
    chex.clear_trace_counter()


def test_public_train_epoch_reuses_its_compiled_program():
    x, y = _blobs(64, 3, 2)
    state = jaxmlp.create_train_state(jax.random.key(0), (3, 5, 2), jaxmlp.optimizer("sgd", 0.1))
    state, _ = jaxmlp.train_epoch(state, x, y, batch_size=16)
    before = _epoch.epoch_program._cache_size()
    for _ in range(3):
        state, _ = jaxmlp.train_epoch(state, x, y, batch_size=16)
    assert _epoch.epoch_program._cache_size() == before


@pytest.mark.parametrize(
    ("n", "batch_size", "batch_sampling", "steps"),
    [(550, 128, "shuffle", 5), (550, 128, "poisson", 4), (5500, 512, "poisson", 11)],
)
def test_a_schedule_sized_by_steps_per_epoch_ends_on_the_last_step_trained(
    n, batch_size, batch_sampling, steps
):
    # 55,000 examples at batch 512: 108 shuffled steps an epoch but 107 Poisson ones; a schedule
    # sized for the wrong count never reaches its final value.
    assert jaxmlp.steps_per_epoch(n, batch_size, batch_sampling) == steps
    assert jaxmlp.steps_per_epoch(55_000, 512, "poisson") == 107
    assert jaxmlp.steps_per_epoch(55_000, 512) == 108
    x, y = _blobs(n, 8, 3)
    epochs = 2
    total = epochs * jaxmlp.steps_per_epoch(n, batch_size, batch_sampling)
    lr = optax.cosine_decay_schedule(0.1, total, alpha=0.0)
    state, _ = jaxmlp.fit(
        jax.random.key(0),
        (8, 16, 3),
        x,
        y,
        optimizer=optax.sgd(lr),
        epochs=epochs,
        batch_size=batch_size,
        batch_sampling=batch_sampling,
    )
    assert int(state.step) == total
    assert float(lr(int(state.step) - 1)) > 0.0 and float(lr(int(state.step))) == 0.0


def test_steps_per_epoch_refuses_what_no_epoch_can_have():
    with pytest.raises(ValueError, match="batch_sampling='replace'"):
        jaxmlp.steps_per_epoch(100, 10, "replace")
    with pytest.raises(ValueError, match="batch_size"):
        jaxmlp.steps_per_epoch(100, 0)


def test_every_example_is_used_once_per_epoch():
    # With a vanishing learning rate the parameters do not move, so the epoch's example-weighted
    # mean loss must equal the loss over the whole set: a dropped or repeated example (such as the
    # padding of the short last batch, 103 = 4 * 25 + 3) would change it.
    # (Random biases and tanh keep the logits free of exact ties, which the tiny updates would
    # otherwise break one way or the other.)
    x, y = _blobs(103, 4, 3, seed=2)
    state = jaxmlp.create_train_state(
        jax.random.key(0),
        (4, 5, 3),
        jaxmlp.optimizer("sgd", 1e-30),
        init="normal",
        init_scale=0.5,
        options=jaxmlp.ModelOptions(activation="tanh"),
    )
    full = jaxmlp.evaluate(state.params, x, y, options=state.options)
    state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=25)
    np.testing.assert_allclose(float(metrics["loss"]), full["loss"], rtol=1e-5)
    np.testing.assert_allclose(float(metrics["train_accuracy"]), full["accuracy"], rtol=1e-6)
    assert int(state.step) == 5


def test_epochs_shuffle_differently_and_deterministically():
    x, y = _blobs(96, 4, 3)

    def run(seed):
        state = jaxmlp.create_train_state(
            jax.random.key(seed), (4, 5, 3), jaxmlp.optimizer("sgd", 0.1)
        )
        losses = []
        for _ in range(2):
            state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=8)
            losses.append(float(metrics["loss"]))
        return state, losses

    a, losses_a = run(0)
    b, _ = run(0)
    chex.assert_trees_all_equal(a.params, b.params)  # bit-identical run to run
    c, _ = run(1)
    assert not np.array_equal(a.params[0]["w"], c.params[0]["w"])


def test_hand_backprop_training_matches_autodiff_training():
    x, y = _blobs(120, 6, 3)
    kwargs = dict(
        optimizer=jaxmlp.optimizer("adam", 1e-2), epochs=2, batch_size=16, dropout_rate=0.2, l2=1e-3
    )
    a, _ = jaxmlp.fit(jax.random.key(0), (6, 8, 3), x, y, gradient="autodiff", **kwargs)
    b, _ = jaxmlp.fit(jax.random.key(0), (6, 8, 3), x, y, gradient="backprop", **kwargs)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-5)


def test_predict_and_probabilities_of_one_example_are_those_of_a_batch_of_one():
    params = jaxmlp.init_mlp(jax.random.key(0), (5, 4, 3))
    x = jnp.linspace(0.0, 1.0, 5)
    label = jaxmlp.predict(params, x)
    chex.assert_shape(label, ())
    assert label == jaxmlp.predict(params, x[None])[0] == jnp.argmax(jaxmlp.forward(params, x))
    probabilities = jaxmlp.probabilities(params, x)
    chex.assert_shape(probabilities, (3,))
    np.testing.assert_allclose(probabilities, jaxmlp.probabilities(params, x[None])[0])


def test_evaluate_counts_every_example():
    x, y = _blobs(1001, 4, 3)
    params = jaxmlp.init_mlp(jax.random.key(0), (4, 6, 3))
    predictions = np.asarray(jnp.argmax(jaxmlp.forward(params, x), -1))
    scores = jaxmlp.evaluate(params, x, y, batch_size=64)
    assert scores["count"] == 1001
    assert scores["correct"] == int((predictions == y).sum())
    np.testing.assert_allclose(
        scores["loss"], float(jaxmlp.cross_entropy(jaxmlp.forward(params, x), y)), rtol=1e-5
    )
    np.testing.assert_array_equal(jaxmlp.predict(params, x), predictions)


def test_train_step_matches_a_written_out_sgd_step():
    x, y = _blobs(16, 3, 2)
    state = jaxmlp.create_train_state(jax.random.key(0), (3, 4, 2), jaxmlp.optimizer("sgd", 0.1))
    grads = jax.grad(jaxmlp.loss)(state.params, jnp.asarray(x), jnp.asarray(y))
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
    new_state, metrics = jaxmlp.train_step(state, jnp.asarray(x), jnp.asarray(y))
    chex.assert_trees_all_close(new_state.params, expected, atol=1e-6)
    assert int(new_state.step) == 1 and bool(metrics["finite"])


def test_divergence_stops_at_the_step_and_keeps_the_last_good_state():
    x, y = _blobs(64, 4, 3)
    x = x * 1e18  # the first step overflows float32
    with pytest.raises(
        jaxmlp.DivergenceError, match=r"epoch 1, step \d+.*lower learning rate"
    ) as e:
        jaxmlp.fit(
            jax.random.key(0),
            (4, 5, 3),
            x,
            y,
            optimizer=jaxmlp.optimizer("sgd", 1e6),
            epochs=2,
            batch_size=16,
        )
    chex.assert_tree_all_finite(e.value.state.params)
    assert e.value.epoch == 1 and e.value.step >= 1


def test_max_norm_bounds_incoming_weight_vectors():
    x, y = _blobs(128, 6, 3)
    state, _ = jaxmlp.fit(
        jax.random.key(0),
        (6, 32, 3),
        x,
        y,
        optimizer=jaxmlp.optimizer("sgd", 5.0),
        epochs=2,
        batch_size=16,
        max_norm=0.5,
    )
    for layer in state.params:
        assert float(jnp.max(jnp.linalg.norm(layer["w"], axis=0))) <= 0.5 + 1e-5


def test_shift_augmentation_moves_pixels_and_keeps_shape():
    image = np.zeros((1, 36), np.float32)
    image[0, 3 * 6 + 3] = 1.0  # one bright pixel in a 6 x 6 image
    shifted = _regularizers.shift_images(jnp.asarray(np.repeat(image, 50, 0)), jax.random.key(0), 1)
    chex.assert_shape(shifted, (50, 36))
    positions = {int(np.argmax(row)) for row in np.asarray(shifted)}
    assert positions <= {r * 6 + c for r in (2, 3, 4) for c in (2, 3, 4)}
    assert len(positions) > 3
    np.testing.assert_allclose(np.asarray(shifted).sum(axis=1), 1.0)


def test_affine_augmentation_without_rotation_or_zoom_is_an_exact_whole_pixel_shift():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((40, 64), np.float32))
    out = np.asarray(_regularizers.affine_images(images, jax.random.key(1), 2, 0.0, 0.0))
    # Each output must equal its input shifted by some (dr, dc) in [-2, 2]^2 with edge fill.
    originals = np.asarray(images).reshape(40, 8, 8)
    for image, moved in zip(originals, out.reshape(40, 8, 8), strict=True):
        padded = np.pad(image, 2, mode="edge")
        matches = [
            (dr, dc)
            for dr in range(-2, 3)
            for dc in range(-2, 3)
            if np.allclose(moved, padded[2 - dr : 10 - dr, 2 - dc : 10 - dc], atol=1e-6)
        ]
        assert matches, "an output is not a whole-pixel shift of its input"


def test_affine_augmentation_rotates_about_the_centre_and_keeps_the_ink():
    side = 28
    image = np.zeros((side, side), np.float32)
    image[4:24, 13:15] = 1.0  # a vertical bar through the centre
    images = jnp.asarray(np.repeat(image.reshape(1, -1), 64, 0))
    out = np.asarray(_regularizers.affine_images(images, jax.random.key(0), 0, 30.0, 0.0))
    chex.assert_shape(out, (64, side * side))
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1 + 1e-6
    # Rotation about the centre keeps the bar's mass (bilinear resampling, nothing crosses the
    # edge) and its centroid, but moves ink off the vertical band for most angles.
    np.testing.assert_allclose(out.sum(axis=1), image.sum(), rtol=0.03)
    rows, cols = np.mgrid[:side, :side]
    for moved in out.reshape(64, side, side):
        centroid = (np.sum(rows * moved) / moved.sum(), np.sum(cols * moved) / moved.sum())
        np.testing.assert_allclose(centroid, (13.5, 13.5), atol=0.2)
    off_band = out.reshape(64, side, side)[:, :, :12].sum(axis=(1, 2))
    assert np.mean(off_band > 1.0) > 0.5
    # Zoom only, by s in [0.8, 1.2]: the bar's length and width both scale by s, its mass by s^2.
    zoomed = np.asarray(_regularizers.affine_images(images, jax.random.key(2), 0, 0.0, 0.2))
    s = np.sqrt(zoomed.sum(axis=1) / image.sum())
    assert 0.75 < s.min() < 0.92 and 1.08 < s.max() < 1.27  # (pixel rounding of a thin bar)


def test_training_with_rotation_and_zoom_runs_in_the_epoch_and_is_deterministic():
    x, y = _blobs(256, 64, 3)

    def first_weights(**options):
        state, _ = jaxmlp.fit(
            jax.random.key(0),
            (64, 16, 3),
            x,
            y,
            optimizer=jaxmlp.optimizer("adam", 1e-2),
            epochs=2,
            batch_size=64,
            **options,
        )
        return np.asarray(state.params[0]["w"])

    augmented = dict(augment_rotate=10.0, augment_scale=0.1, augment_shift=1)
    np.testing.assert_array_equal(first_weights(**augmented), first_weights(**augmented))
    assert not np.allclose(first_weights(**augmented), first_weights())


def _fit_20_32_4(x, y, **options):
    """(params, history) of a 20-32-4 MLP after 15 epochs of Adam 1e-2, batch 64."""
    state, history = jaxmlp.fit(
        jax.random.key(0),
        (20, 32, 4),
        x,
        y,
        optimizer=jaxmlp.optimizer("adam", 1e-2),
        epochs=15,
        batch_size=64,
        **options,
    )
    return state.params, history


def test_adversarial_step_descends_the_mix_of_clean_and_fast_gradient_sign_losses():
    x, y = _blobs(64, 12, 3)
    params = jaxmlp.init_mlp(jax.random.key(1), (12, 8, 3))
    eps, weight, lr = 0.3, 0.25, 0.1
    options = jaxmlp.ModelOptions(adversarial_epsilon=eps, adversarial_weight=weight)
    state = jaxmlp.create_train_state(
        jax.random.key(0), (12, 8, 3), jaxmlp.optimizer("sgd", lr), options=options, params=params
    )
    state, metrics = jaxmlp.train_step(state, x, y)

    # The same update written out: the input gradient's sign, then both losses' gradients.
    def loss(p, inputs):
        return jaxmlp.loss(p, inputs, y)

    x_adv = x + eps * np.sign(jax.grad(loss, argnums=1)(params, x))
    assert loss(params, x_adv) > loss(params, x) + 0.1  # the perturbation does raise the loss
    mixed = jax.grad(lambda p: (1 - weight) * loss(p, x) + weight * loss(p, x_adv))(params)
    expected = jax.tree.map(lambda p, g: p - lr * g, params, mixed)
    chex.assert_trees_all_close(state.params, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        metrics["loss"], (1 - weight) * loss(params, x) + weight * loss(params, x_adv), rtol=1e-5
    )


def test_adversarial_training_makes_the_model_robust_to_fast_gradient_sign_inputs():
    x, y = _blobs(512, 20, 4, seed=3)

    def accuracy_under_attack(params, eps):
        x_grad = jax.grad(lambda inputs: jaxmlp.loss(params, inputs, y))(x)
        return jaxmlp.evaluate(params, x + eps * np.sign(x_grad), y)["accuracy"]

    (plain, _), (robust, _) = _fit_20_32_4(x, y), _fit_20_32_4(x, y, adversarial_epsilon=1.5)
    assert jaxmlp.evaluate(robust, x, y)["accuracy"] >= 0.99
    # Measured: 0.78 for the plain model, 1.0 for the adversarially trained one.
    assert accuracy_under_attack(robust, 1.5) > accuracy_under_attack(plain, 1.5) + 0.15


def test_virtual_adversarial_direction_raises_the_divergence_more_than_random_directions():
    x, y = _blobs(128, 16, 3, seed=4)
    state, _ = jaxmlp.fit(
        jax.random.key(0),
        (16, 32, 3),
        x,
        y,
        optimizer=jaxmlp.optimizer("adam", 1e-2),
        epochs=3,
        batch_size=32,
    )
    params, eps = state.params, 2.0
    options = jaxmlp.ModelOptions(vat_epsilon=eps)
    x = jnp.asarray(x)
    logits = jaxmlp.forward(params, x)
    vat, grads = _regularizers.vat_loss_and_grads(options, params, x, logits, key=jax.random.key(1))
    chex.assert_trees_all_equal_shapes(grads, params)

    def divergence(r):  # per example, the model's clean softmax held fixed
        clean = jax.nn.log_softmax(jaxmlp.forward(params, x))
        return jnp.sum(
            jnp.exp(clean) * (clean - jax.nn.log_softmax(jaxmlp.forward(params, x + r))), -1
        )

    randoms = []
    for seed in range(10):
        r = np.random.default_rng(seed).normal(size=x.shape)
        randoms.append(
            float(jnp.mean(divergence(eps * r / np.linalg.norm(r, axis=1, keepdims=True))))
        )
    # One power iteration finds a direction far steeper than chance.
    assert float(vat) > 3 * max(randoms)


def test_virtual_adversarial_training_makes_the_model_smoother_and_adds_its_term_to_the_loss():
    x, y = _blobs(512, 20, 4, seed=3)

    def virtual_adversarial_divergence(params):
        options = jaxmlp.ModelOptions(vat_epsilon=3.0)
        inputs = jnp.asarray(x)
        value, _ = _regularizers.vat_loss_and_grads(
            options, params, inputs, jaxmlp.forward(params, inputs), key=jax.random.key(9)
        )
        return float(value)

    plain, plain_history = _fit_20_32_4(x, y)
    smooth, smooth_history = _fit_20_32_4(x, y, vat_epsilon=3.0)
    assert jaxmlp.evaluate(smooth, x, y)["accuracy"] >= 0.99
    assert virtual_adversarial_divergence(smooth) < 0.5 * virtual_adversarial_divergence(plain)
    # The reported training loss includes the virtual adversarial term.
    assert smooth_history[0]["loss"] > plain_history[0]["loss"]


def test_virtual_adversarial_term_scores_the_dropped_out_network_the_step_trains():
    x, _ = _blobs(64, 12, 3, seed=5)
    x = jnp.asarray(x)
    params = jaxmlp.init_mlp(jax.random.key(2), (12, 32, 3))
    options = jaxmlp.ModelOptions(dropout_rate=0.5, input_dropout_rate=0.2, vat_epsilon=1e-4)
    key = jax.random.key(3)
    logits = jaxmlp.forward(params, x, dropout_rate=0.5, input_dropout_rate=0.2, key=key)

    def divergence(dropout_key):
        value, _ = _regularizers.vat_loss_and_grads(
            options, params, x, logits, key=jax.random.key(4), dropout_key=dropout_key
        )
        return float(value)

    # Under the masks the clean logits were drawn with, a tiny perturbation changes nothing;
    # under other masks (or none) the two distributions differ.
    assert divergence(key) < 1e-6
    assert divergence(jax.random.key(5)) > 1e-3
    assert divergence(None) > 1e-3
