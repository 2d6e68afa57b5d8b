"""Hand-derived backprop, autodiff and central differences agree."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmlp


def _problem(sizes, batch, dtype, seed=0):
    key_params, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxmlp.init_mlp(key_params, sizes, init="glorot", dtype=dtype)
    # Non-zero biases so that bias gradients are exercised in every layer.
    params = [{"w": p["w"], "b": 0.1 * jnp.ones_like(p["b"])} for p in params]
    x = jax.random.normal(key_x, (batch, sizes[0]), dtype)
    labels = jax.random.randint(key_y, (batch,), 0, sizes[-1])
    return params, x, labels


def _worst_relative_error(a, b):
    return max(row["relative_error"] for row in jaxmlp.grad_check(a, b).values())


CASES = list(itertools.product(jaxmlp.ACTIVATIONS, ("softmax", "sigmoid"), (0.0, 0.05), (0.0, 0.3)))


@pytest.mark.parametrize(("activation", "output", "l2", "dropout_rate"), CASES)
def test_backprop_equals_autodiff_in_float64(x64, activation, output, l2, dropout_rate):
    params, x, labels = _problem((13, 11, 7, 5), 9, jnp.float64)
    options = dict(
        activation=activation,
        output=output,
        l2=l2,
        dropout_rate=dropout_rate,
        key=jax.random.key(42) if dropout_rate else None,
    )
    value, grads = jaxmlp.backprop(params, x, labels, **options)
    expected_value, expected = jax.value_and_grad(jaxmlp.loss)(params, x, labels, **options)
    chex.assert_trees_all_equal_structs(grads, expected)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, expected)
    assert _worst_relative_error(grads, expected) < 1e-10
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)


class BackpropVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_backprop_jits_and_matches_in_float32(self):
        # Full float32 matmuls: on GPUs the default precision is TF32 (about 1e-3 relative),
        # which would measure the hardware's rounding rather than the derivation.
        self.enter_context(jax.default_matmul_precision("highest"))
        params, x, labels = _problem((20, 16, 4), 32, jnp.float32)
        fn = self.variant(lambda p, x, y: jaxmlp.backprop(p, x, y, l2=0.01, activation="tanh"))
        value, grads = fn(params, x, labels)
        expected = jax.grad(jaxmlp.loss)(params, x, labels, l2=0.01, activation="tanh")
        chex.assert_tree_all_finite(grads)
        assert _worst_relative_error(grads, expected) < 1e-5

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_hot_targets_and_input_dropout(self):
        self.enter_context(jax.default_matmul_precision("highest"))
        params, x, labels = _problem((10, 8, 3), 6, jnp.float32)
        targets = jax.nn.one_hot(labels, 3)
        options = dict(input_dropout_rate=0.2, dropout_rate=0.5, key=jax.random.key(1))
        fn = self.variant(lambda p: jaxmlp.backprop(p, x, targets, **options)[1])
        expected = jax.grad(jaxmlp.loss)(params, x, targets, **options)
        assert _worst_relative_error(fn(params), expected) < 1e-5


def test_backprop_with_example_weights_matches_autodiff(x64):
    params, x, labels = _problem((6, 5, 3), 8, jnp.float64)
    weights = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float64)
    _, grads = jaxmlp.backprop(params, x, labels, weights=weights, l2=0.1)
    expected = jax.grad(jaxmlp.loss)(params, x, labels, weights=weights, l2=0.1)
    assert _worst_relative_error(grads, expected) < 1e-10
    # And masked examples really are ignored.
    head = jax.grad(jaxmlp.loss)(params, x[:5], labels[:5], l2=0.1)
    assert _worst_relative_error(grads, head) < 1e-10


@settings(max_examples=6, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5),
    batch=st.integers(1, 6),
    activation=st.sampled_from(sorted(jaxmlp.ACTIVATIONS)),
    seed=st.integers(0, 1000),
)
def test_backprop_equals_autodiff_for_random_architectures(sizes, batch, activation, seed):
    with jax.enable_x64(True):
        sizes = (*sizes[:-1], max(sizes[-1], 2))
        params, x, labels = _problem(tuple(sizes), batch, jnp.float64, seed)
        _, grads = jaxmlp.backprop(params, x, labels, activation=activation, l2=0.01)
        expected = jax.grad(jaxmlp.loss)(params, x, labels, activation=activation, l2=0.01)
        assert _worst_relative_error(grads, expected) < 1e-10


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_numerical_gradient_agrees_with_autodiff_in_float64(x64, activation):
    params, x, labels = _problem((8, 6, 4), 5, jnp.float64, seed=3)
    options = dict(activation=activation, l2=0.01)
    numeric = jaxmlp.numerical_grad(
        lambda p, x, labels: jaxmlp.loss(p, x, labels, **options), params, args=(x, labels)
    )
    assert (
        _worst_relative_error(numeric, jax.grad(jaxmlp.loss)(params, x, labels, **options)) < 1e-6
    )


def test_numerical_gradient_of_a_known_function(x64):
    params = {"a": jnp.array([1.0, -2.0, 3.0], jnp.float64), "b": jnp.array(0.5, jnp.float64)}
    numeric = jaxmlp.numerical_grad(lambda p: jnp.sum(p["a"] ** 3) + jnp.sin(p["b"]), params)
    np.testing.assert_allclose(numeric["a"], 3 * params["a"] ** 2, rtol=1e-7)
    np.testing.assert_allclose(numeric["b"], np.cos(0.5), rtol=1e-7)


def test_grad_check_reports_known_differences():
    a = [{"w": jnp.array([[3.0, 4.0]]), "b": jnp.zeros(2)}]
    b = [{"w": jnp.array([[3.0, 4.0 + 1.0]]), "b": jnp.zeros(2)}]
    report = jaxmlp.grad_check(a, b)
    assert report["[0]['w']"]["max_abs_diff"] == pytest.approx(1.0)
    assert report["[0]['w']"]["mean_abs_diff"] == pytest.approx(0.5)
    # ||a - b|| / (||a|| + ||b||) = 1 / (5 + sqrt(34))
    assert report["[0]['w']"]["relative_error"] == pytest.approx(1 / (5 + 34**0.5))
    assert report["[0]['b']"] == {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "relative_error": 0.0}


def test_grad_check_rejects_different_structures():
    with pytest.raises(ValueError, match="structure"):
        jaxmlp.grad_check([{"w": jnp.ones(2)}], [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}])
