"""Fast checks of the experiments' translations; none needs the real datasets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from experiments import common, dlfs, raschka


def _fake_mnist(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 784)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)


def test_raschka_translation_is_exact_in_float64():
    x, y = _fake_mnist()
    with jax.enable_x64(True):
        proof = raschka.prove_translation(x, y, steps=3, dtype=jnp.float64)
    assert proof["max_abs_change_of_w_h"] > 1e-4  # the weights did move
    assert max(proof["max_abs_difference"]) < 1e-12


def test_raschka_translation_holds_in_float32():
    x, y = _fake_mnist()
    proof = raschka.prove_translation(x, y, steps=3, dtype=jnp.float32)
    assert max(proof["max_abs_difference"]) < 1e-5


def test_raschka_rescaling_constants():
    assert raschka.LR == pytest.approx(0.05)
    assert raschka.L2_MEAN == pytest.approx(1e-4)


def test_book_momentum_equals_optax_momentum():
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=5) for _ in range(6)]
    w_book, v = np.ones(5), np.zeros(5)
    for g in grads:  # deep-learning-from-scratch's Momentum.update
        v = 0.9 * v - 0.01 * g
        w_book = w_book + v
    opt = jaxmlp.optimizer("momentum", 0.01, momentum=0.9)
    w, state = jnp.ones(5), opt.init(jnp.ones(5))
    for g in grads:
        update, state = opt.update(jnp.asarray(g, jnp.float32), state, w)
        w = w + update
    np.testing.assert_allclose(np.asarray(w), w_book, rtol=1e-6)


def test_book_adagrad_close_to_configured_optax():
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=5) for _ in range(6)]
    w_book, h = np.ones(5), np.zeros(5)
    for g in grads:  # deep-learning-from-scratch's AdaGrad.update
        h += g * g
        w_book -= 0.01 * g / (np.sqrt(h) + 1e-7)
    kind, lr, hp = dlfs.OPTIMIZERS["AdaGrad"]
    opt = jaxmlp.optimizer(kind, lr, **hp)
    w, state = jnp.ones(5), opt.init(jnp.ones(5))
    for g in grads:
        update, state = opt.update(jnp.asarray(g, jnp.float32), state, w)
        w = w + update
    np.testing.assert_allclose(np.asarray(w), w_book, rtol=1e-5)


def test_sampling_with_replacement_vmaps_over_seeds():
    x, y = _fake_mnist(200)
    optimizer = jaxmlp.optimizer("sgd", 0.1)
    states = [
        jaxmlp.create_train_state(jax.random.key(s), (784, 8, 10), optimizer) for s in range(3)
    ]
    one = [dlfs.sample_and_train(s, x, y, 16, 5)[1] for s in states]
    run = jax.vmap(lambda s, x, y: dlfs.sample_and_train(s, x, y, 16, 5), in_axes=(0, None, None))
    _, losses = run(jaxmlp.multi.stack_states(states), jnp.asarray(x), jnp.asarray(y))
    assert losses.shape == (3, 5)
    np.testing.assert_allclose(np.asarray(losses), np.stack(one), rtol=1e-5, atol=1e-6)


def test_smooth_curve_keeps_length_and_constants():
    assert common.smooth_curve(np.full(50, 3.0)) == pytest.approx(np.full(50, 3.0))


@pytest.mark.data
def test_d2l_softmax_quick_run_writes_results(tmp_path, monkeypatch):
    import json
    import sys

    import jaxmlp.data
    from experiments import d2l_softmax

    try:
        jaxmlp.data.load("fashion_mnist", download=False)
    except jaxmlp.data.DataError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    monkeypatch.setattr(sys, "argv", ["d2l_softmax", "--quick", "--out", str(tmp_path)])
    d2l_softmax.main()
    result = json.loads((tmp_path / "d2l_softmax_quick.json").read_text())
    assert result["test_accuracy"]["mean"] > 0.6  # one epoch of softmax regression
    assert (tmp_path / "d2l_softmax_quick.png").exists()


@pytest.mark.data
@pytest.mark.parametrize("all_train", [False, True])
def test_records_quick_run_writes_results(all_train, tmp_path, monkeypatch):
    import json
    import sys

    from cli_support import require_mnist

    from experiments import records

    require_mnist()
    argv = ["records", "--task", "mnist_augment", "--quick", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv + (["--all-train"] if all_train else []))
    records.main()
    name = f"records_mnist_augment{'_all' if all_train else ''}_quick"
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["config"]["augment_rotate"] == 10.0
    assert result["config"]["train"] == 2000  # --quick trains on 2000 images
    assert 0.2 < result["test_accuracy"]["mean"] <= 1.0
    assert ("validation_accuracy" in result["history"][0]) is not all_train
    assert (tmp_path / f"{name}.png").exists()


@pytest.mark.data
def test_records_quick_run_of_the_virtual_adversarial_task(tmp_path, monkeypatch):
    import json
    import sys

    from cli_support import require_mnist

    from experiments import records

    require_mnist()
    argv = ["records", "--task", "mnist_vat", "--quick", "--seeds", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    records.main()
    result = json.loads((tmp_path / "records_mnist_vat_quick.json").read_text())
    assert result["config"]["vat_epsilon"] == 2.0
    assert result["config"]["dropout"] == 0.0
    assert result["config"]["task_default_epochs"] == 70
    assert len(result["test_accuracy_per_seed"]) == 2
    assert 0.2 < result["test_accuracy"]["mean"] <= 1.0
    # On CPU the two seeds train as two programs, each timed.
    assert len(result["train_seconds_per_program"]) == 2
    assert all(seconds > 0 for seconds in result["train_seconds_per_program"])
