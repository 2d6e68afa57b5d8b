"""Exact scores over whole datasets, in evaluation mode (no dropout)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxmlp import _validation
from jaxmlp.losses import DATA_LOSSES
from jaxmlp.model import Params, forward_pass
from jaxmlp.training._epoch import steps_per_epoch
from jaxmlp.training._options import ModelOptions
from jaxmlp.training._state import TrainState, check_state
from jaxmlp.training._step import class_ids


def model_and_options(
    model: TrainState | Params, options: ModelOptions | None, **model_options: Any
) -> tuple[Params, ModelOptions]:
    """``(params, options)`` of a [`TrainState`][jaxmlp.TrainState] (its own options) or of bare
    parameters (``options``, else [`ModelOptions`][jaxmlp.ModelOptions] built from
    ``model_options``, else the defaults). Options that contradict a state's own are refused, naming
    both."""
    given = {k: v for k, v in model_options.items() if v is not None}
    if options is not None and not isinstance(options, ModelOptions):
        raise TypeError(f"options must be a jaxmlp.ModelOptions, got {type(options).__name__}")
    if isinstance(model, TrainState):
        check_state(model, "model")
        own = model.options
        if options is not None and options != own:
            raise ValueError(
                f"options={options} differ from the state's own {own}; a state is scored with "
                "the options it was trained with (pass state.params to score it otherwise)"
            )
        for name, value in given.items():
            if getattr(own, name) != value:
                raise ValueError(
                    f"{name}={value!r} but the state was trained with {name}="
                    f"{getattr(own, name)!r}; drop {name}= (the state's own options are used)"
                )
        return model.params, own
    _validation.check_params(model)
    if options is not None and given:
        raise TypeError(f"give either options= or {', '.join(given)}=, not both")
    if options is None:
        options = ModelOptions(**given)
    return model, options


def evaluation(params, images, labels, options: ModelOptions, batch_size: int):
    """``{"loss", "correct"}`` of [`evaluate`][jaxmlp.evaluate] as arrays, without its checks."""
    n_examples = images.shape[0]
    steps = steps_per_epoch(n_examples, batch_size)
    padded = steps * batch_size
    pad = padded - n_examples
    images = jnp.pad(images, ((0, pad), (0, 0))).reshape(steps, batch_size, -1)
    labels = jnp.pad(labels, [(0, pad)] + [(0, 0)] * (labels.ndim - 1)).reshape(
        steps, batch_size, *labels.shape[1:]
    )
    weights = (jnp.arange(padded) < n_examples).astype(images.dtype).reshape(steps, batch_size)

    def body(_, batch):
        x, y, w = batch
        logits = logits_of(params, x, options.activation)
        per_example = DATA_LOSSES[options.output](logits, y, weights=w) * jnp.sum(w)
        correct = jnp.sum((jnp.argmax(logits, -1) == class_ids(y)) * w)
        return None, (per_example, correct)

    _, (loss_sums, correct) = jax.lax.scan(body, None, (images, labels, weights))
    correct = jnp.sum(correct)
    return {
        "loss": jnp.sum(loss_sums) / n_examples,
        "correct": correct.astype(jnp.int32),
    }


evaluation_program = jax.jit(evaluation, static_argnames=("options", "batch_size"))
"""The compiled scoring of [`evaluate`][jaxmlp.evaluate] (``params, images, labels, options,
batch_size``) without its checks: ``{"loss", "correct"}`` as arrays."""


def evaluate(
    model: TrainState | Params,
    images: Float[Array | np.ndarray, "n features"],
    labels: Int[Array, " n"],
    *,
    options: ModelOptions | None = None,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Exact loss and accuracy over all examples, in evaluation mode (no dropout).

    ``model`` is a [`TrainState`][jaxmlp.TrainState] (scored with its own options: activation,
    output) or a parameter list (scored with ``options``, default `ModelOptions()`: ReLU, softmax).
    Examples are scored in chunks of ``batch_size``; the last chunk is padded and masked, so
    every example counts once: ``accuracy = correct / count`` and ``loss`` is the mean data loss
    (without the L2 term) over all examples.

    Returns plain Python numbers ``{"loss", "accuracy", "correct", "count"}``, the accuracy from
    the exact integer counts. Inside the caller's ``jit`` / ``vmap`` the same keys hold arrays
    (``count`` stays an int), with ``accuracy = correct / count`` in floating point.

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> scores = jaxmlp.evaluate(params, jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1]))
        >>> sorted(scores), int(scores["count"])
        (['accuracy', 'correct', 'count', 'loss'], 5)
    """
    params, options = model_and_options(model, options)
    images, labels = _validation.check_dataset(params, images, labels, "images", "labels")
    n_examples = images.shape[0]
    batch_size = min(_validation.check_positive_int("batch_size", batch_size), n_examples)
    metrics = evaluation_program(params, images, labels, options, batch_size)
    if _validation.is_traced(metrics["correct"]):
        return {
            "loss": metrics["loss"],
            "accuracy": metrics["correct"] / n_examples,
            "correct": metrics["correct"],
            "count": n_examples,
        }
    correct = int(metrics["correct"])
    # The accuracy from the exact integer counts, not a float32 quotient.
    return {
        "loss": float(metrics["loss"]),
        "accuracy": correct / n_examples,
        "correct": correct,
        "count": n_examples,
    }


def logits_of(params: Params, x: Array, activation: str) -> Array:
    """The logits in evaluation mode (no dropout) of a batch (n, classes), or of one example
    (classes,); no checks."""
    if x.ndim == 1:
        return logits_of(params, x[None], activation)[0]
    no_masks = [None] * len(params)
    return forward_pass(params, x, no_masks, activation=activation)[1][-1]


def _predictions(params, x, activation: str):
    return jnp.argmax(logits_of(params, x, activation), -1)


prediction_program = jax.jit(_predictions, static_argnames="activation")


def predict(
    model: TrainState | Params,
    images: Float[Array | np.ndarray, "n features"],
    *,
    options: ModelOptions | None = None,
    activation: str | None = None,
) -> np.ndarray | Array:
    """Predicted class ids, shape (n,), in evaluation mode.

    ``model`` is a [`TrainState`][jaxmlp.TrainState] (its own activation is used) or a parameter
    list, whose activation comes from ``options`` or ``activation`` (default ReLU). Returns a NumPy
    array; inside the caller's ``jit`` / ``vmap``, a JAX array.

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> jaxmlp.predict(params, jnp.ones((5, 4))).shape
        (5,)
    """
    params, options = model_and_options(model, options, activation=activation)
    _validation.check_inputs(params, images, "images")
    predictions = prediction_program(params, jnp.asarray(images), options.activation)
    return predictions if _validation.is_traced(predictions) else np.asarray(predictions)


def _probabilities(params, x, activation: str, output: str):
    logits = logits_of(params, x, activation)
    return jax.nn.sigmoid(logits) if output == "sigmoid" else jax.nn.softmax(logits, axis=-1)


probability_program = jax.jit(_probabilities, static_argnames=("activation", "output"))


def probabilities(
    model: TrainState | Params,
    images: Float[Array | np.ndarray, "n features"],
    *,
    options: ModelOptions | None = None,
) -> np.ndarray | Array:
    """Class probabilities, shape (n, classes), in evaluation mode: the softmax of the logits,
    or for ``output="sigmoid"`` each output unit's own sigmoid (scores that need not sum to 1).

    ``model`` is a [`TrainState`][jaxmlp.TrainState] (its own options) or a parameter list with
    ``options``. Returns a NumPy array; inside the caller's ``jit`` / ``vmap``, a JAX array.
    """
    params, options = model_and_options(model, options)
    _validation.check_inputs(params, images, "images")
    values = probability_program(params, jnp.asarray(images), options.activation, options.output)
    return values if _validation.is_traced(values) else np.asarray(values)
