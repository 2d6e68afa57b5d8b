"""Initialisation, the forward pass and dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp


@pytest.mark.parametrize(
    ("sizes", "count"),
    [
        ((784, 256, 10), 784 * 256 + 256 + 256 * 10 + 10),  # 203,530: the PyTorch book's model
        ((784, 256, 256, 10), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10),
        ((784, 10), 7850),  # softmax regression
        ((784, 100, 10), 79510),  # Raschka's NeuralNetMLP
    ],
)
def test_parameter_count_by_hand(sizes, count):
    assert jaxmlp.parameter_count(sizes) == count
    assert jaxmlp.parameter_count(jaxmlp.init_mlp(jax.random.key(0), sizes)) == count


def test_init_shapes_dtypes_and_determinism():
    params = jaxmlp.init_mlp(jax.random.key(0), (5, 4, 3), dtype=jnp.float32)
    chex.assert_shape(params[0]["w"], (5, 4))
    chex.assert_shape(params[0]["b"], (4,))
    chex.assert_shape(params[1]["w"], (4, 3))
    chex.assert_shape(params[1]["b"], (3,))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    chex.assert_trees_all_equal(params, jaxmlp.init_mlp(jax.random.key(0), (5, 4, 3)))
    different = jaxmlp.init_mlp(jax.random.key(1), (5, 4, 3))
    assert not np.array_equal(params[0]["w"], different[0]["w"])
    assert jaxmlp.layer_sizes_of(params) == (5, 4, 3)


@pytest.mark.parametrize(
    ("init", "expected_std", "bias_std"),
    [
        ("he", np.sqrt(2 / 400), 0.0),
        ("glorot", np.sqrt(6 / (400 + 300)) / np.sqrt(3), 0.0),  # uniform(-a, a) has std a/sqrt3
        ("normal", 0.01, 0.01),
    ],
)
def test_init_statistics(init, expected_std, bias_std):
    params = jaxmlp.init_mlp(jax.random.key(0), (400, 300), init=init, init_scale=0.01)
    w, b = np.asarray(params[0]["w"]), np.asarray(params[0]["b"])
    assert abs(w.mean()) < 0.05 * expected_std
    assert w.std() == pytest.approx(expected_std, rel=0.02)
    assert b.std() == pytest.approx(bias_std, rel=0.15, abs=1e-12)


def test_forward_matches_written_out_layers():
    params = jaxmlp.init_mlp(jax.random.key(0), (6, 5, 4, 3), init="normal", init_scale=0.5)
    x = jax.random.normal(jax.random.key(1), (7, 6))
    for name, phi in [
        ("relu", jax.nn.relu),
        ("tanh", jnp.tanh),
        ("sigmoid", jax.nn.sigmoid),
        ("identity", lambda z: z),
    ]:
        h1 = phi(x @ params[0]["w"] + params[0]["b"][None])
        h2 = phi(h1 @ params[1]["w"] + params[1]["b"][None])
        expected = h2 @ params[2]["w"] + params[2]["b"][None]
        logits = jaxmlp.forward(params, x, activation=name)
        chex.assert_shape(logits, (7, 3))
        chex.assert_trees_all_close(logits, expected, atol=1e-5)


def test_identity_activation_makes_a_linear_map():
    params = jaxmlp.init_mlp(jax.random.key(0), (4, 8, 3), init="normal", init_scale=1.0)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    f = lambda x: jaxmlp.forward(params, x, activation="identity")
    chex.assert_trees_all_close(f(2 * x) - f(x), f(x) - f(jnp.zeros_like(x)), atol=1e-4)


class DropoutTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        self.params = jaxmlp.init_mlp(jax.random.key(0), (50, 2000, 4))
        self.x = jax.random.normal(jax.random.key(1), (8, 50))

    def test_evaluation_mode_is_deterministic(self):
        a = jaxmlp.forward(self.params, self.x, dropout_rate=0.5)
        b = jaxmlp.forward(self.params, self.x, dropout_rate=0.5)
        chex.assert_trees_all_equal(a, b)
        chex.assert_trees_all_equal(a, jaxmlp.forward(self.params, self.x))

    def test_same_key_same_mask_different_key_different_mask(self):
        f = lambda key: jaxmlp.forward(self.params, self.x, dropout_rate=0.5, key=key)
        chex.assert_trees_all_equal(f(jax.random.key(3)), f(jax.random.key(3)))
        assert not np.allclose(f(jax.random.key(3)), f(jax.random.key(4)))

    def test_drops_the_requested_fraction_and_rescales(self):
        rate = 0.3
        masks = jaxmlp.model.dropout_masks(jax.random.key(5), [(200, 1000)], [rate], jnp.float32)
        mask = np.asarray(masks[0])
        assert (mask == 0).mean() == pytest.approx(rate, abs=0.01)
        np.testing.assert_allclose(mask[mask > 0], 1 / (1 - rate), rtol=1e-6)
        assert mask.mean() == pytest.approx(1.0, abs=0.02)  # inverted dropout keeps the mean

    def test_hidden_layers_only_by_default(self):
        # With one hidden layer and hidden dropout, zeroing a hidden unit must not touch inputs:
        # the output layer sees masked activations, so outputs differ from evaluation mode.
        train = jaxmlp.forward(self.params, self.x, dropout_rate=0.5, key=jax.random.key(0))
        assert not np.allclose(train, jaxmlp.forward(self.params, self.x))
        masks = jaxmlp.model.layer_masks(
            self.params, 8, dtype=jnp.float32, key=jax.random.key(0), dropout_rate=0.5
        )
        assert masks[0] is None and masks[1] is not None
