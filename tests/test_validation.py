"""Bad input is refused at the boundary with a message naming the argument and what was expected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp

PARAMS = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
X = np.zeros((5, 4), np.float32)
Y = np.array([0, 1, 0, 1, 1], np.int32)
ADAM = jaxmlp.optimizer("adam", 1e-3)


def _fit(x=X, y=Y, **kwargs):
    options = dict(optimizer=ADAM, epochs=1, batch_size=2)
    options.update(kwargs)
    return jaxmlp.fit(jax.random.key(0), (4, 3, 2), x, y, **options)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: jaxmlp.init_mlp(jax.random.key(0), (784,)), ValueError, "at least two sizes"),
        (
            lambda: jaxmlp.init_mlp(jax.random.key(0), (784, 0, 10)),
            ValueError,
            r"layer_sizes\[1\]=0",
        ),
        (lambda: jaxmlp.init_mlp(jax.random.key(0), (784, -3, 10)), ValueError, "positive integer"),
        (
            lambda: jaxmlp.init_mlp(jax.random.key(0), (784, 2.5, 10)),
            ValueError,
            "positive integer",
        ),
        (lambda: jaxmlp.init_mlp(jax.random.key(0), "784-10"), TypeError, "sequence of ints"),
        (
            lambda: jaxmlp.init_mlp(jax.random.key(0), (4, 2), init="xavier"),
            ValueError,
            "init='xavier'.*he, glorot, normal",
        ),
        (
            lambda: jaxmlp.forward(PARAMS, np.zeros((5, 3), np.float32)),
            ValueError,
            r"x has shape \(5, 3\); expected \(batch, 4\)",
        ),
        (lambda: jaxmlp.forward(PARAMS, np.zeros((5, 4), np.uint8)), TypeError, "uint8.*255"),
        (
            lambda: jaxmlp.forward(PARAMS, X, activation="gelu-typo"),
            ValueError,
            "activation='gelu-typo'.*relu, sigmoid, tanh, identity",
        ),
        (
            lambda: jaxmlp.forward(PARAMS, X, dropout_rate=1.0),
            ValueError,
            r"dropout_rate=1.0.*\[0, 1\)",
        ),
        (lambda: jaxmlp.forward(PARAMS, X, dropout_rate=-0.1), ValueError, "dropout_rate"),
        (
            lambda: jaxmlp.loss(PARAMS, X, np.array([0, 1, 2, 1, 0])),
            ValueError,
            r"labels range over \[0, 2\]; expected class ids in \[0, 2\)",
        ),
        (lambda: jaxmlp.loss(PARAMS, X, np.array([0, 1, -1, 1, 0])), ValueError, "labels range"),
        (lambda: jaxmlp.loss(PARAMS, X, Y[:3]), ValueError, "labels has 3 entries but x has 5"),
        (lambda: jaxmlp.loss(PARAMS, X, Y.astype(np.float64)), TypeError, "integer class ids"),
        (lambda: jaxmlp.loss(PARAMS, X, np.zeros((5, 3), np.float32)), ValueError, r"\(5, 2\)"),
        (
            lambda: jaxmlp.loss(PARAMS, X, Y, output="tanh"),
            ValueError,
            "output='tanh'.*softmax, sigmoid",
        ),
        (lambda: jaxmlp.loss(PARAMS, X, Y, l2=-1.0), ValueError, "l2=-1.0"),
        (
            lambda: jaxmlp.backprop(PARAMS, X, Y, activation="swish"),
            ValueError,
            "activation='swish'",
        ),
        (lambda: jaxmlp.backprop([{"w": np.zeros((4, 3))}], X, Y), TypeError, "keys 'w' and 'b'"),
        (lambda: _fit(batch_size=0), ValueError, "batch_size=0"),
        (lambda: _fit(batch_size=6), ValueError, "batch_size=6 is larger than the 5"),
        (lambda: _fit(epochs=0), ValueError, "epochs=0"),
        (
            lambda: _fit(x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int32)),
            ValueError,
            "non-empty",
        ),
        (lambda: _fit(x=np.full((5, 4), np.nan, np.float32)), ValueError, "20 NaN or infinite"),
        (lambda: _fit(x=jnp.full((5, 4), jnp.inf)), ValueError, "x_train contains NaN or inf"),
        (lambda: _fit(x=np.zeros((5, 27 * 27), np.float32)), ValueError, r"\(batch, 4\)"),
        (lambda: _fit(y=np.array(["1", "0", "1", "0", "1"])), TypeError, "integer class ids"),
        (lambda: _fit(activation="softplus-typo"), ValueError, "activation"),
        (lambda: _fit(dropout_rate=1.5), ValueError, "dropout_rate=1.5"),
        (lambda: _fit(colour="red"), TypeError, r"unknown options \['colour'\]"),
        (lambda: jaxmlp.numerical_grad(lambda p: 0.0, PARAMS, eps=0.0), ValueError, "eps=0.0"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_augmentation_needs_square_images():
    x = np.zeros((5, 6), np.float32)
    with pytest.raises(ValueError, match="square images"):
        jaxmlp.fit(
            jax.random.key(0),
            (6, 3, 2),
            x,
            Y,
            optimizer=ADAM,
            epochs=1,
            batch_size=2,
            augment_shift=1,
        )


def test_errors_are_raised_before_any_compile():
    # A refused call must not reach jit: the compiled-program cache of the epoch stays as it was.
    from jaxmlp.training import _epoch

    before = _epoch.epoch_program._cache_size()
    with pytest.raises(ValueError):
        _fit(batch_size=0)
    with pytest.raises(ValueError):
        _fit(x=np.full((5, 4), np.inf, np.float32))
    assert _epoch.epoch_program._cache_size() == before


def test_inputs_are_not_modified():
    x, y = X.copy() + 0.5, Y.copy()
    _fit(x=x, y=y)
    np.testing.assert_array_equal(x, X + 0.5)
    np.testing.assert_array_equal(y, Y)
    assert jnp.asarray(x).dtype == jnp.float32


@pytest.mark.parametrize(
    "options, message",
    [
        ({"augment_rotate": -1.0}, "augment_rotate"),
        ({"augment_rotate": 200.0}, r"augment_rotate=200.0 is invalid; expected degrees"),
        ({"augment_scale": 1.0}, r"augment_scale=1.0 is invalid; expected a fraction"),
        ({"augment_scale": -0.1}, "augment_scale"),
    ],
)
def test_bad_augmentation_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        jaxmlp.ModelOptions(**options)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"adversarial_epsilon": -0.1}, ValueError, "adversarial_epsilon=-0.1 is invalid"),
        ({"adversarial_epsilon": "0.1"}, TypeError, "adversarial_epsilon must be a finite"),
        ({"adversarial_weight": 0.0}, ValueError, r"adversarial_weight=0.0 .* in \(0, 1\]"),
        ({"adversarial_weight": 1.5}, ValueError, r"adversarial_weight=1.5 .* in \(0, 1\]"),
        (
            {"adversarial_epsilon": 0.1, "gradient": "backprop"},
            ValueError,
            "adversarial_epsilon=0.1 needs gradient='autodiff'",
        ),
        ({"vat_epsilon": -2.0}, ValueError, "vat_epsilon=-2.0 is invalid"),
        ({"vat_weight": 0.0}, ValueError, "vat_weight=0.0 is invalid"),
        (
            {"vat_epsilon": 2.0, "gradient": "backprop"},
            ValueError,
            "vat_epsilon=2.0 needs gradient='autodiff'",
        ),
        (
            {"vat_epsilon": 2.0, "output": "sigmoid"},
            ValueError,
            "vat_epsilon=2.0 needs output='softmax'",
        ),
    ],
)
def test_bad_adversarial_options_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        jaxmlp.ModelOptions(**options)


def test_rotation_needs_square_images():
    with pytest.raises(ValueError, match="augment_rotate needs square images"):
        jaxmlp.fit(
            jax.random.key(0),
            (6, 3, 2),
            np.zeros((5, 6), np.float32),
            Y,
            optimizer=ADAM,
            epochs=1,
            batch_size=2,
            augment_rotate=5.0,
        )
