"""Many models in one program: a stack of train states trained and scored under ``jax.vmap``.

Several seeds or hyperparameter settings that share the model's *structure* (layer sizes,
optimizer, :class:`~jaxmlp.ModelOptions`) train together: their train states are stacked along a
leading model axis and one jitted epoch advances them all, each with its own parameters,
optimizer state and random key (so each shuffles and drops out independently). Numbers that
are leaves of the optimizer's state (for example an ``optax.inject_hyperparams`` learning rate)
may differ between the stacked models; see :func:`stack_states`.

    states = jaxmlp.multi.stack_states(
        [jaxmlp.create_train_state(jax.random.key(s), sizes, optimizer) for s in range(10)]
    )
    states, metrics = jaxmlp.multi.train_epoch(states, x, y, batch_size=128)  # metrics: (10,)
    scores = jaxmlp.multi.evaluate(states, x_test, y_test)  # {"accuracy": (10,) array, ...}
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validation
from jaxmlp.training._epoch import check_epoch_arguments, epoch_program, run_epoch
from jaxmlp.training._evaluate import evaluation, logits_of
from jaxmlp.training._state import TrainState, check_state


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """One train state whose every leaf has a leading axis of ``len(states)``.

    Raises:
      ValueError: ``states`` is empty, or the states differ in structure (optimizer, options,
        layer sizes or dtypes), which cannot share one compiled program.
    """
    states = list(states)
    if not states:
        raise ValueError("stack_states needs at least one train state; got an empty sequence")
    for i, state in enumerate(states):
        if not isinstance(state, TrainState):
            raise TypeError(f"states[{i}] is a {type(state).__name__}, expected a TrainState")
    first = states[0]
    first_structure = jax.tree.structure(first)
    first_shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(first)]
    for i, state in enumerate(states[1:], start=1):
        if state.optimizer is not first.optimizer:
            raise ValueError(
                f"states[{i}] has another optimizer than states[0]; stacked states must be "
                "created with the same optimizer object (build it once, pass it to every "
                "create_train_state)"
            )
        if jax.tree.structure(state) != first_structure:
            raise ValueError(
                f"states[{i}] has another structure than states[0] (options or number of "
                "layers differ); only states built with the same optimizer and options stack"
            )
        shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(state)]
        if shapes != first_shapes:
            mismatch = next((a, b) for a, b in zip(shapes, first_shapes, strict=True) if a != b)
            raise ValueError(
                f"states[{i}] has an array of shape/dtype {mismatch[0]} where states[0] has "
                f"{mismatch[1]}; stacked models must have the same layer sizes and dtypes"
            )
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def count(states: TrainState) -> int:
    """How many models a stacked state holds."""
    return int(jax.tree.leaves(states.params)[0].shape[0])


def unstack_states(states: TrainState) -> list[TrainState]:
    """The inverse of :func:`stack_states`: one train state per model."""
    return [jax.tree.map(lambda leaf, i=i: leaf[i], states) for i in range(count(states))]


def first_model(states: TrainState) -> TrainState:
    """The first model of a stacked state (what the data checks compare against), after
    checking that ``states`` is one."""
    if not isinstance(states, TrainState):
        raise TypeError(f"expected a stacked TrainState, got {type(states).__name__}")
    if jnp.ndim(states.step) != 1:
        raise ValueError(
            "expected a stacked train state (each leaf with a leading model axis, from "
            f"jaxmlp.multi.stack_states); got one whose step has shape {jnp.shape(states.step)}"
        )
    first = jax.tree.map(lambda leaf: leaf[0], states)
    check_state(first, "states")
    return first


@functools.partial(jax.jit, static_argnames="batch_size")
def stacked_epoch_program(states: TrainState, images, labels, batch_size: int):
    def one(state):
        return run_epoch(state, images, labels, batch_size, None, 50, None)

    return jax.vmap(one)(states)


def train_epoch(
    states: TrainState, images, labels, *, batch_size: int
) -> tuple[TrainState, dict[str, Any]]:
    """One epoch of every stacked model over the same data, in one jitted program:
    :func:`jaxmlp.train_epoch` under ``jax.vmap``.

    Each model shuffles with its own key, exactly as :func:`jaxmlp.train_epoch` would for that
    model alone. Returns the stacked states and metrics whose values have one entry per model
    (``loss``, ``train_accuracy``, ``diverged_at_step``). The input states are not donated.

    A stack of one model runs :func:`jaxmlp.train_epoch` unbatched instead: on CPU, XLA lays
    out the vmapped weight gradients transposed and copies them back every step, which made one
    784-1024-1024-10 model's epoch 40-55 % slower than the same epoch unbatched.
    """
    first = first_model(states)
    images, labels, batch_size = check_epoch_arguments(first, images, labels, batch_size, None)
    if count(states) == 1:
        state, metrics = epoch_program(first, images, labels, batch_size, None, 50, None)
        return jax.tree.map(lambda leaf: leaf[None], (state, metrics))
    return stacked_epoch_program(states, images, labels, batch_size)


@functools.partial(jax.jit, static_argnames=("options", "batch_size"))
def _evaluate_many(params, images, labels, options, batch_size: int):
    def one(p):
        scores = evaluation(p, images, labels, options, batch_size)
        return scores["loss"], scores["correct"]

    return jax.vmap(one)(params)


def evaluate(states: TrainState, images, labels, *, batch_size: int = 2048) -> dict[str, Any]:
    """Exact loss and accuracy of every stacked model (evaluation mode, no dropout):
    :func:`jaxmlp.evaluate` under ``jax.vmap``.

    Returns numpy arrays with one entry per model: ``loss``, ``accuracy``, ``correct``, and the
    int ``count`` of examples.
    """
    first = first_model(states)
    images, labels = _validation.check_dataset(first.params, images, labels, "images", "labels")
    n = images.shape[0]
    batch_size = min(_validation.check_positive_int("batch_size", batch_size), n)
    loss, correct = _evaluate_many(states.params, images, labels, states.options, batch_size)
    correct = np.asarray(correct)
    return {"loss": np.asarray(loss), "accuracy": correct / n, "correct": correct, "count": n}


@functools.partial(jax.jit, static_argnames="activation")
def _logits_many(params, x, activation: str):
    return jax.vmap(lambda p: logits_of(p, x, activation))(params)


def predict_logits(states: TrainState, images, *, batch_size: int = 2048) -> np.ndarray:
    """Logits of every stacked model, shape (models, n, classes), in evaluation mode."""
    first = first_model(states)
    _validation.check_inputs(first.params, images, "images")
    images = jnp.asarray(images)
    activation = states.options.activation
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    if images.shape[0] == 0:
        classes = first.params[-1]["b"].shape[-1]
        return np.zeros((count(states), 0, classes), np.dtype(first.params[-1]["b"].dtype))
    chunks = [
        np.asarray(_logits_many(states.params, images[i : i + batch_size], activation))
        for i in range(0, images.shape[0], batch_size)
    ]
    return np.concatenate(chunks, axis=1)
