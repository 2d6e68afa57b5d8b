"""Each optimizer's first steps equal its textbook update, written out independently here."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp

LEARNING_RATE = 0.1
GRADIENTS = [np.array([0.5, -1.0, 2.0]), np.array([-0.25, 0.75, 1.0]), np.array([1.0, 1.0, -3.0])]
START = np.array([1.0, 2.0, -1.0])


def sgd(steps):
    w = START.copy()
    for g in steps:
        w = w - LEARNING_RATE * g
    return w


def momentum(steps, mu=0.9, nesterov=False):
    w, v = START.copy(), np.zeros(3)
    for g in steps:
        v = mu * v + g
        w = w - LEARNING_RATE * ((g + mu * v) if nesterov else v)
    return w


def adagrad(steps, initial=0.1, eps=1e-7):
    w, h = START.copy(), np.full(3, initial)
    for g in steps:
        h = h + g * g
        w = w - LEARNING_RATE * g / np.sqrt(h + eps)
    return w


def rmsprop(steps, decay=0.9, eps=1e-8):
    w, n = START.copy(), np.zeros(3)
    for g in steps:
        n = decay * n + (1 - decay) * g * g
        w = w - LEARNING_RATE * g / np.sqrt(n + eps)
    return w


def adam(steps, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    w, m, v = START.copy(), np.zeros(3), np.zeros(3)
    for t, g in enumerate(steps, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - LEARNING_RATE * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * w)
    return w


TEXTBOOK = {
    "sgd": ({}, sgd),
    "momentum": ({}, momentum),
    "nesterov": ({}, lambda s: momentum(s, nesterov=True)),
    "adagrad": ({}, adagrad),
    "rmsprop": ({}, rmsprop),
    "adam": ({}, adam),
    "adamw": ({"weight_decay": 0.01}, lambda s: adam(s, weight_decay=0.01)),
    # The deep-learning-from-scratch settings: no initial accumulator, eps 1e-7.
    "adagrad-dlfs": (
        {"initial_accumulator_value": 0.0, "eps": 1e-7},
        lambda s: adagrad(s, initial=0.0, eps=1e-7),
    ),
}


@pytest.mark.parametrize("case", sorted(TEXTBOOK))
@pytest.mark.parametrize("n_steps", [1, 3])
def test_first_steps_match_the_textbook(x64, case, n_steps):
    hyperparameters, reference = TEXTBOOK[case]
    tx = jaxmlp.optimizer(case.split("-")[0], LEARNING_RATE, **hyperparameters)
    w = jnp.asarray(START)
    state = tx.init(w)
    for g in GRADIENTS[:n_steps]:
        updates, state = tx.update(jnp.asarray(g), state, w)
        w = optax.apply_updates(w, updates)
    np.testing.assert_allclose(w, reference(GRADIENTS[:n_steps]), rtol=1e-10, atol=1e-12)


def test_every_named_optimizer_builds_and_steps():
    for name in jaxmlp.OPTIMIZERS:
        tx = jaxmlp.optimizer(name, 0.01)
        w = jnp.ones(3)
        updates, _ = tx.update(jnp.ones(3), tx.init(w), w)
        assert bool(jnp.all(updates < 0)), name


def test_learning_rate_may_be_a_schedule():
    schedule = jaxmlp.schedule("cosine", 0.1, 10)
    tx = jaxmlp.optimizer("sgd", schedule)
    w = jnp.zeros(1)
    state = tx.init(w)
    steps = []
    for _ in range(3):
        updates, state = tx.update(jnp.ones(1), state, w)
        steps.append(-float(updates[0]))
    np.testing.assert_allclose(steps, [float(schedule(i)) for i in range(3)], rtol=1e-6)
    assert steps[0] > steps[1] > steps[2]


@pytest.mark.parametrize("name", ["cosine", "warmup_cosine", "exponential", "step"])
def test_schedules_start_and_end_where_documented(name):
    fn = jaxmlp.schedule(name, 1.0, 100, warmup_steps=10, final_lr_fraction=0.0)
    values = np.array([float(fn(i)) for i in range(101)])
    assert values.max() == pytest.approx(1.0, rel=1e-6)
    assert values[-1] < values.max()
    assert jaxmlp.schedule("constant", 0.5, 100) == 0.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: jaxmlp.optimizer("adamax-typo", 0.1), "adamax-typo.*expected one of.*adam"),
        (lambda: jaxmlp.optimizer("adam", 0.0), "learning_rate=0.0"),
        (lambda: jaxmlp.optimizer("adam", -1e-3), "learning_rate=-0.001"),
        (lambda: jaxmlp.optimizer("adam", float("nan")), "learning_rate=nan"),
        (lambda: jaxmlp.optimizer("adam", float("inf")), "learning_rate=inf"),
        (lambda: jaxmlp.optimizer("sgd", 0.1, beta=0.9), "does not take beta"),
        (lambda: jaxmlp.schedule("linear-typo", 0.1, 10), "schedule"),
    ],
)
def test_bad_optimizer_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_learning_rate_of_wrong_type():
    with pytest.raises(TypeError, match="learning_rate"):
        jaxmlp.optimizer("adam", "0.001")
    jax.block_until_ready(jaxmlp.optimizer("sgd", 1).init(jnp.ones(1)))  # ints are fine


@pytest.mark.parametrize(
    "call",
    [
        lambda: jaxmlp.schedule("cosine", 0.1, 10, final_fraction=0.1),
        lambda: jaxmlp.OptimizerSettings(beta1=0.9),
        lambda: jaxmlp.OptimizerSettings(initial_accumulator=0.1),
    ],
)
def test_former_argument_names_are_refused(call):
    """final_lr_fraction, b1, initial_accumulator_value: one name each, none before them."""
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        call()
