"""The losses as a specification: softmax, cross-entropy, the logistic cost and the L2 term."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmlp


class SoftmaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1, 2), (7, 10), (64, 3))
    def test_rows_sum_to_one(self, batch, classes):
        logits = 5.0 * jax.random.normal(jax.random.key(batch), (batch, classes))
        probabilities = self.variant(jaxmlp.softmax)(logits)
        chex.assert_shape(probabilities, (batch, classes))
        chex.assert_trees_all_close(jnp.sum(probabilities, axis=-1), jnp.ones(batch), atol=1e-6)
        assert bool(jnp.all(probabilities >= 0))

    @chex.variants(with_jit=True, without_jit=True)
    def test_stable_for_huge_logits(self):
        logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
        labels = jnp.array([1, 0, 2])
        log_probabilities = self.variant(jaxmlp.log_softmax)(logits)
        value = self.variant(jaxmlp.cross_entropy)(logits, labels)
        chex.assert_tree_all_finite((log_probabilities, value))
        # The second row is uniform: log(1/3), up to the float32 spacing of numbers near 1e4.
        chex.assert_trees_all_close(log_probabilities[1], jnp.full(3, -jnp.log(3.0)), atol=2e-3)
        chex.assert_trees_all_close(log_probabilities[0, 0], 0.0, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_log_softmax_is_log_of_softmax(self):
        logits = jax.random.normal(jax.random.key(1), (5, 4))
        chex.assert_trees_all_close(
            self.variant(jaxmlp.log_softmax)(logits), jnp.log(jaxmlp.softmax(logits)), atol=1e-6
        )


class CrossEntropyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_mean_negative_log_probability_of_label(self):
        logits = jax.random.normal(jax.random.key(2), (6, 5))
        labels = jnp.array([0, 4, 2, 2, 1, 3])
        expected = -jnp.mean(jnp.log(jaxmlp.softmax(logits))[jnp.arange(6), labels])
        value = self.variant(jaxmlp.cross_entropy)(logits, labels)
        assert float(value) >= 0
        chex.assert_trees_all_close(value, expected, rtol=1e-6)

    def test_one_hot_and_class_id_labels_agree(self):
        logits = jax.random.normal(jax.random.key(3), (4, 3))
        labels = jnp.array([2, 0, 1, 2])
        chex.assert_trees_all_close(
            jaxmlp.cross_entropy(logits, labels),
            jaxmlp.cross_entropy(logits, jax.nn.one_hot(labels, 3)),
        )

    def test_probability_rows(self):
        logits = jax.random.normal(jax.random.key(4), (3, 2))
        targets = jnp.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
        expected = -jnp.mean(jnp.sum(targets * jaxmlp.log_softmax(logits), axis=-1))
        chex.assert_trees_all_close(jaxmlp.cross_entropy(logits, targets), expected)

    def test_gradient_wrt_logits_is_softmax_minus_onehot_over_batch(self):
        logits = jax.random.normal(jax.random.key(5), (8, 10))
        labels = jax.random.randint(jax.random.key(6), (8,), 0, 10)
        grad = jax.grad(jaxmlp.cross_entropy)(logits, labels)
        expected = (jaxmlp.softmax(logits) - jax.nn.one_hot(labels, 10)) / 8
        chex.assert_trees_all_close(grad, expected, atol=1e-7)

    def test_weights_give_the_mean_over_weighted_examples(self):
        logits = jax.random.normal(jax.random.key(7), (5, 3))
        labels = jnp.array([0, 1, 2, 0, 1])
        weights = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0])
        chex.assert_trees_all_close(
            jaxmlp.cross_entropy(logits, labels, weights=weights),
            jaxmlp.cross_entropy(logits[:3], labels[:3]),
        )


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 16),
    classes=st.integers(2, 12),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_is_finite_and_non_negative(batch, classes, scale, seed):
    key_logits, key_labels = jax.random.split(jax.random.key(seed))
    logits = scale * jax.random.normal(key_logits, (batch, classes))
    labels = jax.random.randint(key_labels, (batch,), 0, classes)
    for value in (
        jaxmlp.cross_entropy(logits, labels),
        jaxmlp.sigmoid_cross_entropy(logits, labels),
    ):
        assert np.isfinite(float(value))
        assert float(value) >= 0


def test_sigmoid_cross_entropy_is_the_logistic_cost():
    logits = jax.random.normal(jax.random.key(8), (4, 3))
    labels = jnp.array([0, 2, 1, 1])
    y = jax.nn.one_hot(labels, 3)
    s = jax.nn.sigmoid(logits)
    # Raschka's cost, per example summed over output units, then averaged over the batch.
    expected = jnp.mean(jnp.sum(-y * jnp.log(s) - (1 - y) * jnp.log(1 - s), axis=-1))
    chex.assert_trees_all_close(jaxmlp.sigmoid_cross_entropy(logits, labels), expected, rtol=1e-6)


def test_sigmoid_cross_entropy_gradient_is_sigmoid_minus_target_over_batch():
    logits = jax.random.normal(jax.random.key(9), (6, 4))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    grad = jax.grad(jaxmlp.sigmoid_cross_entropy)(logits, labels)
    chex.assert_trees_all_close(
        grad, (jax.nn.sigmoid(logits) - jax.nn.one_hot(labels, 4)) / 6, atol=1e-7
    )


class L2Test(chex.TestCase):
    def test_penalty_is_half_sum_of_squared_weights_only(self):
        params = jaxmlp.init_mlp(jax.random.key(0), (5, 4, 3), init="normal", init_scale=1.0)
        expected = 0.5 * (jnp.sum(params[0]["w"] ** 2) + jnp.sum(params[1]["w"] ** 2))
        chex.assert_trees_all_close(jaxmlp.l2_penalty(params), expected)

    def test_gradient_of_l2_term_is_l2_times_w_and_leaves_biases(self):
        params = jaxmlp.init_mlp(jax.random.key(1), (6, 5, 3), init="normal", init_scale=1.0)
        x = jax.random.normal(jax.random.key(2), (4, 6))
        labels = jnp.array([0, 1, 2, 0])
        l2 = 0.3
        with_l2 = jax.grad(jaxmlp.loss)(params, x, labels, l2=l2)
        without = jax.grad(jaxmlp.loss)(params, x, labels)
        for layer, a, b in zip(params, with_l2, without, strict=True):
            chex.assert_trees_all_close(a["w"] - b["w"], l2 * layer["w"], atol=1e-6)
            chex.assert_trees_all_close(a["b"], b["b"])


def test_loss_adds_l2_penalty_to_mean_data_loss():
    params = jaxmlp.init_mlp(jax.random.key(3), (4, 3, 2))
    x = jax.random.normal(jax.random.key(4), (5, 4))
    labels = jnp.array([0, 1, 1, 0, 1])
    data = jaxmlp.cross_entropy(jaxmlp.forward(params, x), labels)
    chex.assert_trees_all_close(
        jaxmlp.loss(params, x, labels, l2=0.1), data + 0.1 * jaxmlp.l2_penalty(params), rtol=1e-6
    )
    sigmoid = jaxmlp.sigmoid_cross_entropy(jaxmlp.forward(params, x), labels)
    chex.assert_trees_all_close(jaxmlp.loss(params, x, labels, output="sigmoid"), sigmoid)


@pytest.mark.parametrize("name", ["cross_entropy", "sigmoid_cross_entropy"])
def test_loss_is_smaller_for_the_right_class(name):
    fn = getattr(jaxmlp, name)
    logits = jnp.array([[4.0, 0.0, 0.0]])
    assert float(fn(logits, jnp.array([0]))) < float(fn(logits, jnp.array([1])))
