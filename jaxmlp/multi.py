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

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _validation
from jaxmlp.model import _forward
from jaxmlp.training import (
    TrainState,
    _check_augmentation,
    _check_batch_size,
    _evaluate,
    _train_epoch,
    _train_epoch_jit,
    check_training_data,
)


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


def _first_params(states: TrainState):
    """The first model's parameters of a stacked state (what the data checks compare
    against), after checking that ``states`` is one."""
    if not isinstance(states, TrainState):
        raise TypeError(f"expected a stacked TrainState, got {type(states).__name__}")
    if jnp.ndim(states.step) != 1:
        raise ValueError(
            "expected a stacked train state (each leaf with a leading model axis, from "
            f"jaxmlp.multi.stack_states); got one whose step has shape {jnp.shape(states.step)}"
        )
    return jax.tree.map(lambda leaf: leaf[0], states.params)


_train_epoch_many = jax.jit(
    jax.vmap(_train_epoch, in_axes=(0, None, None, None, None, None)),
    static_argnums=(3, 4, 5),
    donate_argnums=0,
)


def train_epoch(
    states: TrainState, images, labels, *, batch_size: int
) -> tuple[TrainState, dict[str, Any]]:
    """One epoch of every stacked model over the same data, in one jitted program.

    Each model shuffles with its own key, exactly as :func:`jaxmlp.train_epoch` would for that
    model alone. Returns the stacked states and metrics whose values have one entry per model
    (``loss``, ``train_accuracy``, ``diverged_at_step``). The input states' buffers are donated.

    A stack of one model runs :func:`jaxmlp.train_epoch`'s program instead: on CPU, XLA lays out
    the vmapped weight gradients transposed and copies them back every step, which made one
    784-1024-1024-10 model's epoch 40-55 % slower than the same epoch unbatched.
    """
    first = _first_params(states)
    images, labels = check_training_data(first, images, labels, "images", "labels")
    batch_size = _check_batch_size(batch_size, images.shape[0])
    _check_augmentation(states.options, images.shape[1])
    if count(states) == 1:
        state = jax.tree.map(lambda leaf: leaf[0], states)
        state, metrics = _train_epoch_jit(state, images, labels, batch_size, None, 1, None)
        return jax.tree.map(lambda leaf: leaf[None], (state, metrics))
    return _train_epoch_many(states, images, labels, batch_size, None, 1)


_evaluate_many = jax.jit(
    jax.vmap(_evaluate, in_axes=(0, None, None, None, None)),
    static_argnums=(3, 4),
)


def evaluate(states: TrainState, images, labels, *, batch_size: int = 2048) -> dict[str, Any]:
    """Exact loss and accuracy of every stacked model (evaluation mode, no dropout).

    Returns numpy arrays with one entry per model: ``loss``, ``accuracy``, ``correct``, and the
    int ``count`` of examples.
    """
    first = _first_params(states)
    _validation.check_params(first)
    images, labels = check_training_data(first, images, labels, "images", "labels")
    batch_size = min(_validation.check_positive_int("batch_size", batch_size), images.shape[0])
    metrics = _evaluate_many(states.params, images, labels, states.options, batch_size)
    correct = np.asarray(metrics["correct"])
    n = images.shape[0]
    return {
        "loss": np.asarray(metrics["loss"]),
        "accuracy": correct / n,
        "correct": correct,
        "count": n,
    }


def predict_logits(states: TrainState, images, *, batch_size: int = 2048) -> np.ndarray:
    """Logits of every stacked model, shape (models, n, classes), in evaluation mode."""
    first = _first_params(states)
    _validation.check_inputs(first, images)
    images = jnp.asarray(images)
    activation = states.options.activation
    batch_size = _validation.check_positive_int("batch_size", batch_size)
    if images.shape[0] == 0:
        classes = first[-1]["b"].shape[-1]
        return np.zeros((count(states), 0, classes), np.dtype(first[-1]["b"].dtype))
    chunks = [
        np.asarray(_logits_many(states.params, images[i : i + batch_size], activation))
        for i in range(0, images.shape[0], batch_size)
    ]
    return np.concatenate(chunks, axis=1)


_logits_many = jax.jit(
    jax.vmap(
        lambda params, x, activation: _forward(params, x, activation, 0.0, 0.0, None),
        in_axes=(0, None, None),
    ),
    static_argnums=2,
)
