"""Per-example gradients (by hand and by autodiff) and differentially private SGD: the maths
against a NumPy reference, the DP step against its definition, the accounting against
dp-accounting itself, and bad input refused before anything compiles."""

from __future__ import annotations

import itertools

import chex
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import pld, rdp

import jaxmlp
from jaxmlp import per_example, privacy
from jaxmlp.losses import LossOptions
from jaxmlp.training import _epoch

SIZES = (7, 6, 5, 4)


def _problem(dtype=jnp.float64, batch=9, sizes=SIZES, seed=0):
    k_params, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxmlp.init_mlp(k_params, sizes, init="glorot", dtype=dtype)
    params = [{"w": p["w"], "b": 0.1 * jnp.ones_like(p["b"])} for p in params]
    x = jax.random.normal(k_x, (batch, sizes[0]), dtype)
    labels = jax.random.randint(k_y, (batch,), 0, sizes[-1])
    return params, x, labels


# --------------------------------------------------------------------------------------------
# A NumPy reference: each example's gradient of its own loss, written out


def _numpy_per_example(params, x, labels, masks, activation, output):
    phi = {
        "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
        "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
        "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    }[activation]
    params = [{k: np.asarray(v) for k, v in layer.items()} for layer in params]
    grads = []
    for i in range(x.shape[0]):
        a, inputs, pre = np.asarray(x[i]), [], []
        for index, layer in enumerate(params):
            if masks[index] is not None:
                a = a * np.asarray(masks[index][i])
            inputs.append(a)
            z = a @ layer["w"] + layer["b"]
            pre.append(z)
            a = phi[0](z) if index < len(params) - 1 else z
        target = np.eye(len(pre[-1]))[int(labels[i])]
        logits = pre[-1]
        if output == "softmax":
            e = np.exp(logits - logits.max())
            delta = e / e.sum() - target
        else:
            delta = 1 / (1 + np.exp(-logits)) - target
        example = [None] * len(params)
        for index in reversed(range(len(params))):
            example[index] = {"w": np.outer(inputs[index], delta), "b": delta}
            if index:
                delta = delta @ params[index]["w"].T
                if masks[index] is not None:
                    delta = delta * np.asarray(masks[index][i])
                delta = delta * phi[1](pre[index - 1])
        grads.append(example)
    return [
        {k: np.stack([g[layer][k] for g in grads]) for k in ("w", "b")}
        for layer in range(len(params))
    ]


CASES = list(itertools.product(("relu", "sigmoid", "tanh"), ("softmax", "sigmoid"), (0.0, 0.4)))


@pytest.mark.parametrize(("activation", "output", "dropout_rate"), CASES)
def test_per_example_gradients_by_hand_autodiff_and_numpy_agree_in_float64(
    x64, activation, output, dropout_rate
):
    params, x, labels = _problem()
    options = dict(
        activation=activation,
        output=output,
        dropout_rate=dropout_rate,
        input_dropout_rate=dropout_rate / 2,
        key=jax.random.key(3) if dropout_rate else None,
    )
    by_hand = jaxmlp.per_example_grads(params, x, labels, method="backprop", **options)
    by_autodiff = jaxmlp.per_example_grads(params, x, labels, method="autodiff", **options)
    masks = jaxmlp.model.layer_masks(
        params,
        x.shape[0],
        dtype=x.dtype,
        key=options["key"],
        dropout_rate=dropout_rate,
        input_dropout_rate=dropout_rate / 2,
    )
    reference = _numpy_per_example(params, x, labels, masks, activation, output)
    chex.assert_trees_all_equal_shapes(by_hand, by_autodiff)
    chex.assert_shape(by_hand[0]["w"], (9, 7, 6))
    chex.assert_trees_all_close(by_hand, reference, atol=1e-10, rtol=1e-10)
    chex.assert_trees_all_close(by_autodiff, reference, atol=1e-10, rtol=1e-10)
    # Their mean is the batch gradient of the data loss (the same dropout masks from the key).
    batch = jax.grad(jaxmlp.loss)(params, x, labels, **options)
    chex.assert_trees_all_close(
        jax.tree.map(lambda g: g.mean(0), by_hand), batch, atol=1e-12, rtol=1e-10
    )
    # The norms: from the layer terms alone, by autodiff, and of the NumPy gradients.
    norms = np.sqrt(sum(np.sum(g.reshape(9, -1) ** 2, 1) for g in jax.tree.leaves(reference)))
    for method in ("backprop", "autodiff"):
        got = jaxmlp.per_example_grad_norms(params, x, labels, method=method, **options)
        np.testing.assert_allclose(got, norms, rtol=1e-10)


def test_the_l2_term_belongs_to_the_batch_not_to_an_example(x64):
    params, x, labels = _problem()
    per = jaxmlp.per_example_grads(params, x, labels)
    with_l2 = jax.grad(jaxmlp.loss)(params, x, labels, l2=0.3)
    mean_plus_l2 = [
        {"w": g["w"].mean(0) + 0.3 * p["w"], "b": g["b"].mean(0)}
        for g, p in zip(per, params, strict=True)
    ]
    chex.assert_trees_all_close(mean_plus_l2, with_l2, atol=1e-12)


def test_per_example_functions_work_inside_the_caller_s_jit_and_vmap():
    params, x, labels = _problem(jnp.float32)
    plain = jaxmlp.per_example_grad_norms(params, x, labels)
    jitted = jax.jit(lambda p: jaxmlp.per_example_grad_norms(p, x, labels))(params)
    np.testing.assert_allclose(jitted, plain, rtol=1e-6)
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf, 2 * leaf]), params)
    both = jax.vmap(lambda p: jaxmlp.per_example_grads(p, x, labels)[0]["b"])(stacked)
    chex.assert_shape(both, (2, 9, 6))
    # A vmapped matrix product rounds apart from the unbatched one (2e-7 seen on a loaded CPU).
    np.testing.assert_allclose(
        both[0], jaxmlp.per_example_grads(params, x, labels)[0]["b"], rtol=1e-6
    )


@pytest.mark.parametrize("method", ["backprop", "autodiff"])
def test_the_clipped_sum_clips_each_example_and_skips_masked_ones(x64, method):
    params, x, labels = _problem()
    per = jaxmlp.per_example_grads(params, x, labels)
    norms = np.asarray(jaxmlp.per_example_grad_norms(params, x, labels))
    clip = float(np.median(norms))  # about half the examples are clipped
    weights = jnp.asarray([1, 1, 1, 1, 1, 1, 1, 0, 0], jnp.float64)
    total, norms_used, _, _ = per_example.clipped_grad_sum(
        LossOptions(), params, x, labels, clip_norm=clip, method=method, weights=weights
    )
    factors = np.minimum(1.0, clip / norms) * np.asarray(weights)
    expected = jax.tree.map(lambda g: np.tensordot(factors, np.asarray(g), axes=1), per)
    chex.assert_trees_all_close(total, expected, atol=1e-12, rtol=1e-10)
    clipped_norms = norms * np.minimum(1.0, clip / norms)
    assert np.all(clipped_norms <= clip * (1 + 1e-12)) and np.any(norms > clip)
    np.testing.assert_allclose(norms_used, norms, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# The DP-SGD step


def _dp_state(params, options, lr=1.0):
    return jaxmlp.create_train_state(
        jax.random.key(0),
        tuple(jaxmlp.layer_sizes_of(params)),
        jaxmlp.optimizer("sgd", lr),
        options=options,
        params=params,
    )


@pytest.mark.parametrize("method", ["backprop", "autodiff"])
def test_a_noiseless_dp_step_moves_by_the_mean_of_the_clipped_gradients(x64, method):
    params, x, labels = _problem()
    clip = 0.5
    options = jaxmlp.ModelOptions(dp_clip_norm=clip, gradient=method)
    state, metrics = jaxmlp.train_step(_dp_state(params, options), x, labels)
    per = jaxmlp.per_example_grads(params, x, labels)
    norms = np.asarray(jaxmlp.per_example_grad_norms(params, x, labels))
    factors = np.minimum(1.0, clip / norms)
    assert np.all(norms * factors <= clip * (1 + 1e-12))  # no example contributes more than C
    mean_clipped = jax.tree.map(lambda g: np.tensordot(factors, np.asarray(g), axes=1) / 9, per)
    moved = jax.tree.map(lambda new, old: old - new, state.params, params)
    chex.assert_trees_all_close(moved, mean_clipped, atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(metrics["loss"], jaxmlp.loss(params, x, labels), rtol=1e-12)


@pytest.mark.parametrize("method", ["backprop", "autodiff"])
def test_with_a_huge_clip_and_no_noise_dp_training_is_plain_training(method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)
    common = dict(
        optimizer=jaxmlp.optimizer("adam", 1e-2), epochs=3, batch_size=20, l2=1e-3, gradient=method
    )
    plain, plain_history = jaxmlp.fit(jax.random.key(0), (12, 16, 4), x, y, **common)
    private, private_history = jaxmlp.fit(
        jax.random.key(0), (12, 16, 4), x, y, dp_clip_norm=1e9, **common
    )
    chex.assert_trees_all_close(private.params, plain.params, rtol=1e-5, atol=1e-6)
    assert "epsilon" not in private_history[-1]  # no noise: no privacy to account for
    np.testing.assert_allclose(private_history[-1]["loss"], plain_history[-1]["loss"], rtol=1e-5)


def test_the_noise_has_standard_deviation_sigma_c_over_b():
    params = jaxmlp.init_mlp(jax.random.key(0), (200, 150, 10))
    x = jnp.zeros((16, 200))
    labels = jnp.zeros(16, jnp.int32)
    sigma, clip, batch = 1.5, 0.7, 16

    def update(noise_multiplier):
        options = jaxmlp.ModelOptions(dp_clip_norm=clip, dp_noise_multiplier=noise_multiplier)
        state, _ = jaxmlp.train_step(_dp_state(params, options), x, labels)
        return state.params

    noisy, clean = update(sigma), update(0.0)
    leaves = zip(jax.tree.leaves(clean), jax.tree.leaves(noisy), strict=True)
    noise = np.concatenate([np.ravel(a - b) for a, b in leaves])
    expected = sigma * clip / batch
    assert noise.size > 30_000
    np.testing.assert_allclose(noise.std(), expected, rtol=0.02)
    assert abs(noise.mean()) < 0.02 * expected


def test_poisson_batches_have_the_expected_size_and_every_epoch_counts_its_examples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    y = rng.integers(0, 3, 2000).astype(np.int32)
    options = jaxmlp.ModelOptions(batch_sampling="poisson", dp_clip_norm=1.0)
    state = jaxmlp.create_train_state(
        jax.random.key(0), (8, 6, 3), jaxmlp.optimizer("sgd", 0.1), options=options
    )
    sizes = []
    for _ in range(5):
        state, metrics = jaxmlp.train_epoch(state, x, y, batch_size=100)
        sizes.append(float(metrics["examples"]) / 20)  # round(2000 / 100) steps an epoch
        assert float(metrics["dropped_examples"]) == 0
    assert int(state.step) == 5 * 20
    # 100 expected per batch; the mean of 100 batches has a standard deviation of about 1.
    assert 96 < np.mean(sizes) < 104
    steps, capacity = (
        jaxmlp.steps_per_epoch(2000, 100, "poisson"),
        _epoch.poisson_capacity(2000, 100),
    )
    assert steps == 20 and 100 < capacity < 2000


def test_dp_training_runs_in_multi_and_tracks_epsilon_in_fit():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    y = rng.integers(0, 3, 300).astype(np.int32)
    options = jaxmlp.ModelOptions(dp_clip_norm=1.0, dp_noise_multiplier=1.1, gradient="backprop")
    sgd = jaxmlp.optimizer("sgd", 0.1)
    states = [
        jaxmlp.create_train_state(jax.random.key(s), (10, 8, 3), sgd, options=options)
        for s in range(2)
    ]
    stacked, metrics = jaxmlp.multi.train_epoch(
        jaxmlp.multi.stack_states(states), x, y, batch_size=30
    )
    chex.assert_shape(metrics["loss"], (2,))
    alone, _ = jaxmlp.train_epoch(states[1], x, y, batch_size=30)
    together = jaxmlp.multi.unstack_states(stacked)[1]
    chex.assert_trees_all_close(together.params, alone.params, rtol=1e-5, atol=1e-6)
    # fit reports the privacy spent after each epoch, counted from the state's own step.
    _, history = jaxmlp.fit(
        x_train=x, y_train=y, state=states[0], epochs=2, batch_size=30, dp_delta=1e-5
    )
    for record in history:
        steps = 10 * record["epoch"]
        assert record["epsilon"] == privacy.epsilon(
            noise_multiplier=1.1, sampling_rate=0.1, steps=steps, delta=1e-5
        )
    assert history[0]["epsilon"] < history[1]["epsilon"]


# --------------------------------------------------------------------------------------------
# Accounting


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_is_dp_accounting_s_own_answer(accountant):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(4.0)), 10_000
    )
    direct = (rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()).compose(event)
    got = privacy.epsilon(
        noise_multiplier=4.0, sampling_rate=0.01, steps=10_000, delta=1e-5, accountant=accountant
    )
    assert got == direct.get_epsilon(1e-5)
    assert 0.5 < got < 1.26  # below Abadi et al.'s moments accountant (1.26): a tighter bound


def test_the_calibrated_noise_multiplier_spends_the_target_epsilon():
    sigma = privacy.noise_multiplier_for_epsilon(
        target_epsilon=2.0, sampling_rate=0.01, steps=3000, delta=1e-5
    )
    spent = privacy.epsilon(noise_multiplier=sigma, sampling_rate=0.01, steps=3000, delta=1e-5)
    assert 1.99 < spent <= 2.0
    more = privacy.epsilon(
        noise_multiplier=sigma * 0.99, sampling_rate=0.01, steps=3000, delta=1e-5
    )
    assert more > 2.0  # the smallest sigma: a little less noise spends more than the target


# --------------------------------------------------------------------------------------------
# Bad input, before any compile


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: jaxmlp.ModelOptions(dp_clip_norm=0.0), ValueError, "dp_clip_norm=0.0"),
        (lambda: jaxmlp.ModelOptions(dp_clip_norm=-1.0), ValueError, "dp_clip_norm=-1.0"),
        (
            lambda: jaxmlp.ModelOptions(dp_clip_norm=1.0, dp_noise_multiplier=-0.5),
            ValueError,
            "dp_noise_multiplier=-0.5",
        ),
        (
            lambda: jaxmlp.ModelOptions(dp_noise_multiplier=1.0),
            ValueError,
            "needs dp_clip_norm",
        ),
        (
            lambda: jaxmlp.ModelOptions(dp_clip_norm=1.0, vat_epsilon=2.0),
            ValueError,
            "vat_epsilon=2.0 cannot be combined with dp_clip_norm",
        ),
        (
            lambda: jaxmlp.ModelOptions(dp_clip_norm=1.0, adversarial_epsilon=0.1),
            ValueError,
            "adversarial_epsilon=0.1 cannot be combined",
        ),
        (
            lambda: jaxmlp.ModelOptions(batch_sampling="bernoulli"),
            ValueError,
            "batch_sampling='bernoulli'.*shuffle, poisson",
        ),
        (
            lambda: privacy.epsilon(noise_multiplier=1.0, sampling_rate=0.01, steps=10, delta=0.0),
            ValueError,
            r"delta=0.0 is invalid; expected 0 < delta < 1",
        ),
        (
            lambda: privacy.epsilon(noise_multiplier=1.0, sampling_rate=0.01, steps=10, delta=1.5),
            ValueError,
            "delta=1.5",
        ),
        (
            lambda: privacy.noise_multiplier_for_epsilon(
                target_epsilon=1e-4, sampling_rate=1.0, steps=10**6, delta=1e-5
            ),
            ValueError,
            "target_epsilon=0.0001 cannot be met",
        ),
        (
            lambda: privacy.epsilon(
                noise_multiplier=1.0, sampling_rate=0.01, steps=10, delta=1e-5, accountant="gdp"
            ),
            ValueError,
            "accountant='gdp'",
        ),
        (
            lambda: jaxmlp.per_example_grads(*_problem(jnp.float32), method="finite-differences"),
            ValueError,
            "method='finite-differences'.*autodiff, backprop",
        ),
        (
            lambda: jaxmlp.ModelOptions(dp_clip_norm=0.0),
            ValueError,
            "dp_clip_norm=0.0",
        ),
    ],
)
def test_bad_privacy_input_is_refused_with_a_clear_message(call, error, message):
    before = _epoch.epoch_program._cache_size()
    with pytest.raises(error, match=message):
        call()
    assert _epoch.epoch_program._cache_size() == before


def test_fit_refuses_a_bad_delta_before_training():
    x = np.zeros((10, 4), np.float32)
    y = np.zeros(10, np.int32)
    before = _epoch.epoch_program._cache_size()
    with pytest.raises(ValueError, match="delta=2.0 is invalid"):
        jaxmlp.fit(
            jax.random.key(0),
            (4, 3, 2),
            x,
            y,
            optimizer=jaxmlp.optimizer("sgd", 0.1),
            epochs=1,
            batch_size=5,
            dp_clip_norm=1.0,
            dp_noise_multiplier=1.0,
            dp_delta=2.0,
        )
    assert _epoch.epoch_program._cache_size() == before


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["shuffle", "poisson"])
def test_dp_training_over_a_data_parallel_mesh_equals_one_device(sampling, tmp_path):
    import json
    import os
    import subprocess
    import sys

    code = f"""
import json, jax, numpy as np, jaxmlp
from jaxmlp import sharding
assert jax.device_count() == 2
rng = np.random.default_rng(0)
x = rng.normal(size=(400, 12)).astype(np.float32)
y = rng.integers(0, 3, 400).astype(np.int32)
common = dict(optimizer=jaxmlp.optimizer("sgd", 0.2), epochs=2, batch_size=40,
              dp_clip_norm=1.0, dp_noise_multiplier=0.8, batch_sampling="{sampling}",
              gradient="backprop")
alone, history = jaxmlp.fit(jax.random.key(0), (12, 8, 3), x, y, **common)
split, _ = jaxmlp.fit(jax.random.key(0), (12, 8, 3), x, y,
                      mesh=sharding.data_parallel_mesh(), **common)
difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                 for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(split.params)))
print(json.dumps({{"difference": difference, "epsilon": history[-1]["epsilon"]}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    # The same noise and batches on one device and on two: only summation order differs.
    assert result["difference"] < 1e-5
    assert result["epsilon"] > 0
