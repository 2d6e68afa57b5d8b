"""The PyTorch / Opacus side of the privacy benchmark computes what it claims.

Per-example gradients are held against softmax cross-entropy backpropagated by hand in NumPy, one
example at a time; a DP-SGD step against its formula
``(sum_i g_i * min(1, C / (||g_i|| + 1e-6)) + N(0, sigma^2 C^2)) / B``; a DP epoch without noise
or clipping against plain SGD over the same batches.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

ROOT = Path(__file__).resolve().parents[1]


def _load_privacy_torch():
    # By path: Opacus's wheel installs a top-level package named ``benchmarks`` too, which
    # shadows this repository's whenever its root is not first on sys.path.
    spec = importlib.util.spec_from_file_location(
        "privacy_torch", ROOT / "benchmarks" / "privacy_torch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pt = _load_privacy_torch()

ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (
        lambda z: 1.0 / (1.0 + np.exp(-z)),
        lambda z: np.exp(-z) / (1.0 + np.exp(-z)) ** 2,
    ),
}


def _params(sizes, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [
        {
            "w": rng.normal(0.0, 1.0, (n_in, n_out)).astype(dtype),
            "b": rng.normal(0.0, 0.5, n_out).astype(dtype),
        }
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def _data(n, sizes, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], n)


def _forward(params, x, activation):
    act = ACTIVATIONS[activation][0]
    a = x
    for layer in params[:-1]:
        a = act(a @ layer["w"] + layer["b"])
    return a @ params[-1]["w"] + params[-1]["b"]


def _example_grad(params, x, label, activation):
    """d/dparams of -log softmax(logits)[label] for one example ``x`` (n_in,)."""
    act, act_prime = ACTIVATIONS[activation]
    pre, post = [], [x]
    for layer in params:
        pre.append(post[-1] @ layer["w"] + layer["b"])
        post.append(act(pre[-1]))
    logits = pre[-1]
    softmax = np.exp(logits - logits.max())
    softmax /= softmax.sum()
    delta = softmax - np.eye(len(logits))[label]  # dloss/dlogits
    grads = []
    for index in reversed(range(len(params))):
        grads.append({"w": np.outer(post[index], delta), "b": delta})
        if index:
            delta = (params[index]["w"] @ delta) * act_prime(pre[index - 1])
    return grads[::-1]


def _flat(grads):
    return np.concatenate([leaf.ravel() for layer in grads for leaf in layer.values()])


SIZES = (6, 5, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_torch_mlp_is_jaxmlps_forward_pass(activation, dtype):
    params = _params(SIZES, dtype=dtype)
    x, _ = _data(4, SIZES, dtype=dtype)
    model = pt.torch_mlp(params, activation)
    logits = model(torch.from_numpy(x)).detach().numpy()
    assert logits.dtype == dtype
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(logits, _forward(params, x, activation), rtol=tolerance)
    for original, copied in zip(params, pt.numpy_params(model), strict=True):
        np.testing.assert_array_equal(copied["w"], original["w"])
        np.testing.assert_array_equal(copied["b"], original["b"])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_opacus_per_example_grads_are_each_examples_own_gradient(activation):
    params = _params(SIZES)
    x, labels = _data(4, SIZES)
    grads = pt.opacus_per_example_grads(params, x, labels, activation=activation)
    for index in range(len(x)):
        expected = _example_grad(params, x[index], labels[index], activation)
        for layer, own in zip(grads, expected, strict=True):
            assert layer["w"].shape == (len(x), *own["w"].shape)
            np.testing.assert_allclose(layer["w"][index], own["w"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(layer["b"][index], own["b"], rtol=1e-10, atol=1e-12)


def test_mean_of_per_example_grads_is_torchs_batch_gradient():
    params = _params(SIZES)
    x, labels = _data(4, SIZES)
    grads = pt.opacus_per_example_grads(params, x, labels)
    model = pt.torch_mlp(params)
    loss = torch.nn.functional.cross_entropy(
        model(torch.from_numpy(x)), torch.from_numpy(labels.astype(np.int64))
    )
    loss.backward()
    linears = [module for module in model if isinstance(module, torch.nn.Linear)]
    for layer, linear in zip(grads, linears, strict=True):
        np.testing.assert_allclose(layer["w"].mean(axis=0), linear.weight.grad.numpy().T)
        np.testing.assert_allclose(layer["b"].mean(axis=0), linear.bias.grad.numpy())


def test_opacus_per_example_norms_are_global_l2_norms():
    params = _params(SIZES)
    x, labels = _data(4, SIZES)
    norms = pt.opacus_per_example_norms(params, x, labels)
    expected = [
        np.linalg.norm(_flat(_example_grad(params, x[i], labels[i], "relu"))) for i in range(4)
    ]
    assert norms.shape == (4,)
    np.testing.assert_allclose(norms, expected, rtol=1e-10)


def test_dp_epoch_without_noise_or_clipping_is_plain_sgd_over_the_same_batches():
    params = _params(SIZES)
    x, labels = _data(16, SIZES)
    settings = {"batch_size": 4, "learning_rate": 0.1, "seed": 3}
    private = pt.opacus_dp_epoch(params, x, labels, clip_norm=1e9, noise_multiplier=0.0, **settings)
    plain = pt.torch_epoch(params, x, labels, **settings)
    assert private["steps"] == plain["steps"] == private["steps_per_epoch"] == 4
    assert private["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-12)
    for trained, baseline, initial in zip(private["params"], plain["params"], params, strict=True):
        for name in ("w", "b"):
            np.testing.assert_allclose(trained[name], baseline[name], rtol=1e-12, atol=1e-14)
            assert not np.allclose(trained[name], initial[name])
    other_order = pt.torch_epoch(params, x, labels, **{**settings, "seed": 4})
    assert not np.allclose(other_order["params"][0]["w"], plain["params"][0]["w"])


def test_dp_sum_is_divided_by_batch_size_when_the_epoch_ends_short():
    # 18 examples in batches of 4 make 5 steps; Opacus alone would divide by int(18 / 5) = 3.
    params = _params(SIZES)
    x, labels = _data(18, SIZES)
    settings = {"batch_size": 4, "learning_rate": 0.1, "seed": 5, "max_steps": 1}
    private = pt.opacus_dp_epoch(params, x, labels, clip_norm=1e9, noise_multiplier=0.0, **settings)
    plain = pt.torch_epoch(params, x, labels, **settings)
    assert private["steps_per_epoch"] == 5
    np.testing.assert_allclose(_flat(private["params"]), _flat(plain["params"]), rtol=1e-12)


def test_dp_step_clips_each_example_then_divides_by_the_batch_size():
    params = _params(SIZES)
    x, labels = _data(4, SIZES)
    grads = [_flat(_example_grad(params, x[i], labels[i], "relu")) for i in range(4)]
    norms = np.linalg.norm(grads, axis=1)
    clip_norm = float(np.median(norms))
    assert (norms > clip_norm).any() and (norms < clip_norm).any()
    clipped = [g * min(1.0, clip_norm / (n + 1e-6)) for g, n in zip(grads, norms, strict=True)]
    learning_rate = 0.5
    expected = _flat(params) - learning_rate * np.sum(clipped, axis=0) / 4
    step = pt.opacus_dp_epoch(
        params,
        x,
        labels,
        batch_size=4,
        clip_norm=clip_norm,
        noise_multiplier=0.0,
        learning_rate=learning_rate,
    )
    assert step["steps"] == 1
    np.testing.assert_allclose(_flat(step["params"]), expected, rtol=1e-10)


def test_dp_noise_has_standard_deviation_sigma_clip_over_batch_size():
    sizes = (40, 30, 10)
    params = _params(sizes)
    x, labels = _data(8, sizes)
    settings = {"batch_size": 8, "clip_norm": 0.5, "learning_rate": 1.0}
    noisy = pt.opacus_dp_epoch(params, x, labels, noise_multiplier=2.0, **settings)
    clean = pt.opacus_dp_epoch(params, x, labels, noise_multiplier=0.0, **settings)
    # One step of SGD: the two runs differ by -learning_rate * noise / batch_size.
    noise = -(_flat(noisy["params"]) - _flat(clean["params"])) * 8
    assert noise.size == 40 * 30 + 30 + 30 * 10 + 10
    assert np.std(noise) == pytest.approx(2.0 * 0.5, rel=0.1)
    assert abs(np.mean(noise)) < 4 * 1.0 / np.sqrt(noise.size)


@pytest.mark.parametrize("poisson", [False, True])
def test_dp_epoch_is_reproducible_from_its_seed(poisson):
    params = _params(SIZES)
    x, labels = _data(20, SIZES)
    settings = {"batch_size": 4, "clip_norm": 1.0, "noise_multiplier": 1.0}
    settings |= {"learning_rate": 0.1, "poisson": poisson}
    first = pt.opacus_dp_epoch(params, x, labels, seed=7, **settings)
    again = pt.opacus_dp_epoch(params, x, labels, seed=7, **settings)
    other = pt.opacus_dp_epoch(params, x, labels, seed=8, **settings)
    assert first["steps"] == first["steps_per_epoch"] == 5
    np.testing.assert_array_equal(_flat(first["params"]), _flat(again["params"]))
    assert not np.allclose(_flat(first["params"]), _flat(other["params"]))


def test_poisson_batches_hold_a_random_number_of_examples():
    params = _params(SIZES)
    x, labels = _data(300, SIZES)
    settings = {"batch_size": 10, "clip_norm": 1.0, "noise_multiplier": 1.0}
    settings |= {"learning_rate": 0.1, "seed": 2}
    shuffled = pt.opacus_dp_epoch(params, x, labels, poisson=False, **settings)
    poisson = pt.opacus_dp_epoch(params, x, labels, poisson=True, **settings)
    assert shuffled["steps"] == poisson["steps"] == 30
    assert shuffled["examples"] == 300
    # 30 batches each taking every example with probability 1/30: about 300 +- 17 in all.
    assert poisson["examples"] != 300
    assert abs(poisson["examples"] - 300) < 5 * 17


def test_max_steps_stops_the_epoch_early():
    params = _params(SIZES, dtype=np.float32)
    x, labels = _data(20, SIZES, dtype=np.float32)
    settings = {"batch_size": 4, "learning_rate": 0.1, "max_steps": 2}
    plain = pt.torch_epoch(params, x, labels, **settings)
    private = pt.opacus_dp_epoch(
        params, x, labels, clip_norm=1.0, noise_multiplier=1.0, poisson=True, **settings
    )
    for result in (plain, private):
        assert (result["steps"], result["steps_per_epoch"]) == (2, 5)
        assert result["seconds"] > 0 and np.isfinite(result["final_loss"])
        assert result["params"][0]["w"].dtype == np.float32


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="float32 or float64"):
        pt.torch_mlp(_params(SIZES, dtype=np.float16))
    with pytest.raises(ValueError, match="activation"):
        pt.torch_mlp(_params(SIZES), "gelu")
    mismatched = _params(SIZES)
    mismatched[1]["w"] = mismatched[1]["w"][:4]
    with pytest.raises(ValueError, match="layer 1 takes 4 inputs"):
        pt.torch_mlp(mismatched)
    x, labels = _data(4, SIZES)
    with pytest.raises(ValueError, match="labels"):
        pt.opacus_per_example_grads(_params(SIZES), x, labels[:3])


def test_available():
    assert pt.available()
