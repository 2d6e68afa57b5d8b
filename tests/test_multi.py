"""jaxmlp.multi: stacked train states trained and scored in one vmapped program."""

import chex
import jax
import numpy as np
import pytest

import jaxmlp
import jaxmlp.multi


def _data(n=300, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    centres = rng.normal(size=(classes, features)) * 2
    return (centres[labels] + rng.normal(size=(n, features))).astype(np.float32), labels


SIZES = (20, 16, 4)
OPTIONS = jaxmlp.ModelOptions(dropout_rate=0.2, max_norm=2.0)


ADAM = jaxmlp.optimizer("adam", 1e-2)


def _states(seeds, options=OPTIONS, sizes=SIZES, optimizer=ADAM):
    return [
        jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer, options=options)
        for s in seeds
    ]


def test_stacked_epochs_equal_each_model_trained_alone():
    x, y = _data()
    stacked = jaxmlp.multi.stack_states(_states([0, 1, 2]))
    for _ in range(2):
        stacked, metrics = jaxmlp.multi.train_epoch(stacked, x, y, batch_size=64)  # ragged
    chex.assert_shape(metrics["loss"], (3,))
    for seed, together in zip([0, 1, 2], jaxmlp.multi.unstack_states(stacked), strict=True):
        (alone,) = _states([seed])
        for _ in range(2):
            alone, _ = jaxmlp.train_epoch(alone, x, y, batch_size=64)
        chex.assert_trees_all_close(together.params, alone.params, rtol=2e-5, atol=2e-6)
        assert int(together.step) == int(alone.step) == 10
    # The seeds really differ: the models are not copies of one another.
    first, second = jaxmlp.multi.unstack_states(stacked)[:2]
    assert not np.allclose(first.params[0]["w"], second.params[0]["w"])


def test_a_stack_of_one_model_trains_exactly_as_the_model_alone():
    x, y = _data(seed=2)
    stacked = jaxmlp.multi.stack_states(_states([8]))
    (alone,) = _states([8])
    for _ in range(2):
        stacked, metrics = jaxmlp.multi.train_epoch(stacked, x, y, batch_size=64)
        alone, alone_metrics = jaxmlp.train_epoch(alone, x, y, batch_size=64)
    chex.assert_shape(metrics["loss"], (1,))
    chex.assert_shape(stacked.step, (1,))
    (together,) = jaxmlp.multi.unstack_states(stacked)
    chex.assert_trees_all_equal(together.params, alone.params)
    chex.assert_trees_all_equal(together.opt_state, alone.opt_state)
    np.testing.assert_array_equal(together.key, alone.key)
    assert float(metrics["loss"][0]) == float(alone_metrics["loss"])


def test_stacked_evaluation_equals_per_model_evaluation_and_logits_match_forward():
    x, y = _data(seed=1)
    stacked = jaxmlp.multi.stack_states(_states([3, 4]))
    stacked, _ = jaxmlp.multi.train_epoch(stacked, x, y, batch_size=50)
    scores = jaxmlp.multi.evaluate(stacked, x, y, batch_size=128)
    logits = jaxmlp.multi.predict_logits(stacked, x, batch_size=128)
    chex.assert_shape(logits, (2, 300, 4))
    for i, state in enumerate(jaxmlp.multi.unstack_states(stacked)):
        alone = jaxmlp.evaluate(state.params, x, y, options=OPTIONS)
        assert int(scores["correct"][i]) == alone["correct"]
        np.testing.assert_allclose(scores["loss"][i], alone["loss"], rtol=1e-5)
        np.testing.assert_allclose(logits[i], jaxmlp.forward(state.params, x), rtol=1e-5, atol=1e-5)


def test_stack_and_unstack_are_inverse():
    states = _states([5, 6, 7])
    chex.assert_trees_all_equal(
        jaxmlp.multi.unstack_states(jaxmlp.multi.stack_states(states)), states
    )
    assert jaxmlp.multi.count(jaxmlp.multi.stack_states(states)) == 3


def test_repeated_epochs_compile_once():
    x, y = _data()
    stacked = jaxmlp.multi.stack_states(_states([0, 1]))
    stacked, _ = jaxmlp.multi.train_epoch(stacked, x, y, batch_size=60)
    before = jaxmlp.multi.stacked_epoch_program._cache_size()
    for _ in range(3):
        stacked, _ = jaxmlp.multi.train_epoch(stacked, x, y, batch_size=60)
    assert jaxmlp.multi.stacked_epoch_program._cache_size() == before


@pytest.mark.parametrize(
    "states, error, message",
    [
        ([], ValueError, "at least one train state"),
        (
            _states([0]) + _states([1], options=jaxmlp.ModelOptions(dropout_rate=0.5)),
            ValueError,
            "another structure",
        ),
        (_states([0]) + _states([1], sizes=(20, 8, 4)), ValueError, "same layer sizes"),
        (
            _states([0]) + _states([1], optimizer=jaxmlp.optimizer("adam", 1e-2)),
            ValueError,
            "same optimizer object",
        ),
    ],
)
def test_states_that_cannot_share_a_program_are_refused(states, error, message):
    with pytest.raises(error, match=message):
        jaxmlp.multi.stack_states(states)


def test_a_stacked_epoch_checks_its_data_once(monkeypatch):
    from jaxmlp import _validation

    x, y = _data()
    stacked = jaxmlp.multi.stack_states(_states([0, 1]))
    calls = []
    check_dataset = _validation.check_dataset
    monkeypatch.setattr(
        _validation, "check_dataset", lambda *a, **k: calls.append(1) or check_dataset(*a, **k)
    )
    jaxmlp.multi.train_epoch(stacked, x, y, batch_size=10)
    assert len(calls) == 1


def test_an_unstacked_state_or_bad_data_is_refused_before_compiling():
    x, y = _data()
    (single,) = _states([0])
    before = jaxmlp.multi.stacked_epoch_program._cache_size()
    with pytest.raises(ValueError, match="expected a stacked train state"):
        jaxmlp.multi.train_epoch(single, x, y, batch_size=10)
    stacked = jaxmlp.multi.stack_states(_states([0, 1]))
    with pytest.raises(ValueError, match="batch_size"):
        jaxmlp.multi.train_epoch(stacked, x, y, batch_size=0)
    with pytest.raises(ValueError):
        jaxmlp.multi.train_epoch(stacked, x[:, :10], y, batch_size=10)
    assert jaxmlp.multi.stacked_epoch_program._cache_size() == before


def test_logits_of_no_images_are_empty_and_non_states_are_refused():
    stacked = jaxmlp.multi.stack_states(_states([0, 1]))
    chex.assert_shape(
        jaxmlp.multi.predict_logits(stacked, np.zeros((0, 20), np.float32)), (2, 0, 4)
    )
    with pytest.raises(TypeError, match=r"states\[0\] is a int"):
        jaxmlp.multi.stack_states([3, *_states([0])])
    with pytest.raises(ValueError, match="batch_size"):
        jaxmlp.multi.predict_logits(stacked, np.zeros((3, 20), np.float32), batch_size=0)
