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
    assert result["config"]["dropout_rate"] == 0.0
    assert result["config"]["task_default_epochs"] == 70
    assert len(result["test_accuracy_per_seed"]) == 2
    assert 0.2 < result["test_accuracy"]["mean"] <= 1.0
    # On CPU the two seeds train as two programs, each timed.
    assert len(result["train_seconds_per_program"]) == 2
    assert all(seconds > 0 for seconds in result["train_seconds_per_program"])


def test_dp_abadi_accounting_reproduces_the_paper_s_moments_accountant():
    from experiments import dp_abadi

    # The paper's section 3.1: sigma 4, q 0.01, 10,000 steps, delta 1e-5 -> epsilon about 1.26.
    paper = dp_abadi.moments_accountant_epsilon(
        sigma=4.0, sigma_pca=None, steps=10_000, q=0.01, per_step=1
    )
    assert round(paper, 2) == 1.26
    # dp-accounting's own RDP and PLD accountants bound the same mechanism more tightly.
    for accountant in ("rdp", "pld"):
        tighter = dp_abadi.composed_epsilon(
            sigma=4.0, sigma_pca=None, steps=10_000, q=0.01, per_step=1, accountant=accountant
        )
        assert 0.8 < tighter < paper
    # Epochs each configuration may train within its epsilon, by the paper's own accounting.
    epochs = {name: dp_abadi.paper_epochs(c, 100, 0.01) for name, c in dp_abadi.PAPER.items()}
    assert epochs == {"large noise": 14, "medium noise": 107, "small noise": 353}


def test_dp_pca_projects_onto_the_leading_directions():
    import jax

    from experiments import dp_abadi

    rng = np.random.default_rng(0)
    # Points near a 2-d plane in 10-d space: the projection must span that plane.
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0]
    data = (rng.normal(size=(500, 2)) * [5.0, 3.0]) @ basis.T + 0.01 * rng.normal(size=(500, 10))
    projection = dp_abadi.dp_pca(data.astype(np.float32), 2, 0.5, jax.random.key(0))
    assert projection.shape == (10, 2)
    # The principal angles between the two planes are small.
    cosines = np.linalg.svd(basis.T @ projection, compute_uv=False)
    assert cosines.min() > 0.99


@pytest.mark.data
def test_dp_abadi_quick_runs_write_results(tmp_path, monkeypatch):
    import json
    import sys

    from cli_support import require_mnist

    from experiments import dp_abadi

    require_mnist()
    for part in ("reproduce", "search", "final"):
        monkeypatch.setattr(
            sys, "argv", ["dp_abadi", "--part", part, "--quick", "--out", str(tmp_path)]
        )
        dp_abadi.main()
    reproduce = json.loads((tmp_path / "dp_abadi_reproduce_quick.json").read_text())
    assert set(reproduce["rows"]) == set(dp_abadi.PAPER)
    for row in reproduce["rows"].values():
        assert 0 < row["epsilon_pld"] <= row["epsilon_rdp"]  # PLD is the tighter bound
        assert row["epsilon_paper_accounting"] <= row["paper"]["epsilon"]
    final = json.loads((tmp_path / "dp_abadi_final_quick.json").read_text())
    assert set(final["rows"]) == {"1.0", "2.0", "8.0"}
    for epsilon, row in final["rows"].items():
        for run in row["runs"]:  # every run spends its target, calibrated
            assert abs(run["epsilon_rdp"] - float(epsilon)) < 1e-3 * float(epsilon)
