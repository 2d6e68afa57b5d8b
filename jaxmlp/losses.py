"""Softmax, cross-entropy, the logistic cost and the L2 penalty, written once and stable.

Batch losses are means over the batch. Optional per-example ``weights`` (0 or 1 for a padded
last batch) turn the mean into sum(weights * loss) / sum(weights), so a short tail batch is
scored exactly without a second compile.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxmlp import _validation
from jaxmlp.model import ACTIVATIONS, Params, forward_pass, layer_masks

__all__ = [
    "OUTPUTS",
    "cross_entropy",
    "l2_penalty",
    "log_softmax",
    "loss",
    "loss_and_logits",
    "sigmoid_cross_entropy",
    "softmax",
]

OUTPUTS = ("softmax", "sigmoid")
"""Output layers: softmax with cross-entropy, or sigmoid units with the logistic cost."""


def log_softmax(logits: Float[Array, "... classes"]) -> Float[Array, "... classes"]:
    """log softmax(z)_k = z_k - logsumexp(z), stable for any finite logits."""
    return logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)


def softmax(logits: Float[Array, "... classes"]) -> Float[Array, "... classes"]:
    """exp(log_softmax(z)); rows sum to one."""
    return jnp.exp(log_softmax(logits))


def one_hot_targets(labels: Array, n_classes: int, dtype) -> Array:
    """One-hot rows for integer class ids; probability rows pass through."""
    if labels.ndim == 1:
        return jax.nn.one_hot(labels, n_classes, dtype=dtype)
    return labels.astype(dtype)


def weighted_mean(per_example: Array, weights: Array | None) -> Array:
    """mean(per_example), or sum(weights * per_example) / max(sum(weights), 1)."""
    if weights is None:
        return jnp.mean(per_example)
    weights = weights.astype(per_example.dtype)
    return jnp.sum(weights * per_example) / jnp.maximum(jnp.sum(weights), 1)


def cross_entropy(
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"] | Float[Array, "batch classes"],
    *,
    weights: Float[Array, " batch"] | None = None,
) -> Float[Array, ""]:
    """Mean over the batch of -sum_k y_k log softmax(z)_k (= -log p[label] for class ids).

    ``labels`` are int class ids of shape (batch,), or one-hot / probability rows of shape
    (batch, classes).
    """
    targets = one_hot_targets(labels, logits.shape[-1], logits.dtype)
    return weighted_mean(-jnp.sum(targets * log_softmax(logits), axis=-1), weights)


def sigmoid_cross_entropy(
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"] | Float[Array, "batch classes"],
    *,
    weights: Float[Array, " batch"] | None = None,
) -> Float[Array, ""]:
    """The logistic cost of sigmoid output units over one-hot targets (Raschka's NeuralNetMLP).

    Per example: sum_k -y_k log s(z_k) - (1 - y_k) log(1 - s(z_k)), with s the sigmoid; the
    batch mean of that. Written with log-sigmoids so it stays finite for large |z|.
    """
    targets = one_hot_targets(labels, logits.shape[-1], logits.dtype)
    per_unit = -targets * jax.nn.log_sigmoid(logits) - (1 - targets) * jax.nn.log_sigmoid(-logits)
    return weighted_mean(jnp.sum(per_unit, axis=-1), weights)


def l2_penalty(params: Params) -> Float[Array, ""]:
    """0.5 * sum of squared weights over all layers; biases are not regularised."""
    # cast: params is never empty, so the sum is an array, not the start value 0.
    return cast(Array, 0.5 * sum(jnp.sum(layer["w"] ** 2) for layer in params))


DATA_LOSSES = {"softmax": cross_entropy, "sigmoid": sigmoid_cross_entropy}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossOptions:
    """What the loss of a batch depends on besides the parameters and the data: the options of
    [`loss`][jaxmlp.loss], [`jaxmlp.backprop`][jaxmlp.backprop.backprop] and
    [`jaxmlp.per_example`][], checked once when built.

    Frozen and hashable, so it can be a static argument of ``jax.jit``; the functions that take
    it (`batch_loss`, `jaxmlp.backprop.batch_backprop`, ...) check nothing more.
    [`jaxmlp.ModelOptions.loss`][] is the one a train state's step uses.
    """

    activation: str = "relu"
    output: str = "softmax"
    l2: float = 0.0
    dropout_rate: float = 0.0
    input_dropout_rate: float = 0.0

    def __post_init__(self):
        _validation.check_choice("activation", self.activation, ACTIVATIONS)
        _validation.check_choice("output", self.output, OUTPUTS)
        _validation.check_non_negative("l2", self.l2)
        _validation.check_rate("dropout_rate", self.dropout_rate)
        _validation.check_rate("input_dropout_rate", self.input_dropout_rate)


def loss(
    params: Params,
    x: Float[Array, "*batch features"],
    labels: Int[Array, "*batch"] | Float[Array, "*batch classes"],
    *,
    activation: str = "relu",
    l2: float = 0.0,
    output: str = "softmax",
    dropout_rate: float = 0.0,
    input_dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
    weights: Float[Array, "*batch"] | None = None,
) -> Float[Array, ""]:
    """Mean data loss over the batch + ``l2 * l2_penalty(params)``.

    ``output="softmax"`` scores the logits with [`cross_entropy`][jaxmlp.cross_entropy],
    ``output="sigmoid"`` with [`sigmoid_cross_entropy`][jaxmlp.sigmoid_cross_entropy]. Dropout is
    applied when ``key`` is given (see [`jaxmlp.forward`][]). Differentiate it with ``jax.grad``.

    ``x`` is a batch (batch, n_in) with labels (batch,) or (batch, classes), or one example
    (n_in,) with a label of shape () or (classes,): per-example gradients are then
    ``jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, labels)``. Works inside the
    caller's ``jit`` / ``vmap`` / ``grad``; label values are range-checked only when concrete.

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> x, y = jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1])
        >>> round(float(jaxmlp.loss(params, x, y)), 4)
        0.6732
        >>> jax.grad(jaxmlp.loss)(params, x, y)[0]["w"].shape
        (4, 3)
    """
    return loss_and_logits(
        params,
        x,
        labels,
        activation=activation,
        l2=l2,
        output=output,
        dropout_rate=dropout_rate,
        input_dropout_rate=input_dropout_rate,
        key=key,
        weights=weights,
    )[0]


def loss_and_logits(
    params: Params,
    x: Float[Array, "*batch features"],
    labels: Int[Array, "*batch"] | Float[Array, "*batch classes"],
    *,
    activation: str = "relu",
    l2: float = 0.0,
    output: str = "softmax",
    dropout_rate: float = 0.0,
    input_dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
    weights: Float[Array, "*batch"] | None = None,
) -> tuple[Float[Array, ""], Float[Array, "*batch classes"]]:
    """[`loss`][jaxmlp.loss] and, as an auxiliary output, the logits it scored: for
    ``jax.value_and_grad(loss_and_logits, has_aux=True)``, which gives the loss, its gradients
    and the predictions of one forward pass."""
    options = LossOptions(
        activation=activation,
        output=output,
        l2=l2,
        dropout_rate=dropout_rate,
        input_dropout_rate=input_dropout_rate,
    )
    x, labels, weights, batched = check_loss_arguments(params, x, labels, key, weights)
    value, logits = batch_loss(options, params, x, labels, key=key, weights=weights)
    return value, logits if batched else logits[0]


def batch_loss(
    options: LossOptions,
    params: Params,
    x: Array,
    labels: Array,
    *,
    key: PRNGKeyArray | None = None,
    weights: Array | None = None,
) -> tuple[Array, Array]:
    """``(loss, logits)`` of a batch (batch, n_in): what [`loss_and_logits`][jaxmlp.loss_and_logits]
    computes once its arguments are checked; it checks nothing. The dropout masks are
    `batch_masks`' for ``key``."""
    scored = scored_pass(options, params, x, labels, key=key, weights=weights)
    return scored.loss, scored.pre_activations[-1]


class ScoredPass(NamedTuple):
    """A forward pass with its loss, and what a backward pass needs from it."""

    loss: Array
    """The (weighted) mean data loss, plus ``l2 * l2_penalty`` when ``l2`` is set."""
    masks: list[Array | None]
    """The dropout masks, input first (`batch_masks`)."""
    layer_inputs: list[Array]
    """Each layer's masked input a_{l-1}."""
    pre_activations: list[Array]
    """Each layer's z_l; the last is the logits."""


def scored_pass(
    options: LossOptions,
    params: Params,
    x: Array,
    labels: Array,
    *,
    key: PRNGKeyArray | None = None,
    weights: Array | None = None,
) -> ScoredPass:
    """The forward pass of a batch and its loss, written once for `batch_loss` and
    `jaxmlp.backprop.batch_backprop`; no checks."""
    masks = batch_masks(options, params, x, key)
    layer_inputs, pre_activations = forward_pass(params, x, masks, activation=options.activation)
    value = DATA_LOSSES[options.output](pre_activations[-1], labels, weights=weights)
    if not _validation.is_static_zero(options.l2):
        value = value + options.l2 * l2_penalty(params)
    return ScoredPass(value, masks, layer_inputs, pre_activations)


def batch_masks(options: LossOptions, params: Params, x: Array, key) -> list[Array | None]:
    """The dropout masks of a forward pass over the batch ``x`` with these options and ``key``
    (`jaxmlp.model.layer_masks`; no masks without a key)."""
    return layer_masks(
        params,
        x.shape[0],
        dtype=x.dtype,
        key=key,
        dropout_rate=options.dropout_rate,
        input_dropout_rate=options.input_dropout_rate,
    )


def check_loss_arguments(params, x, labels, key, weights):
    """The boundary checks of the data a loss is computed on (the options check themselves in
    `LossOptions`): ``(x, labels, weights, batched)`` as arrays, one example made a
    batch of one, and whether ``x`` was a batch."""
    _validation.check_params(params)
    batched = _validation.check_inputs(params, x)
    _validation.check_labels(
        labels, np.shape(x)[0] if batched else None, np.shape(params[-1]["w"])[1]
    )
    _validation.check_key("key", key, optional=True)
    if weights is not None:
        expected = (np.shape(x)[0],) if batched else ()
        if tuple(np.shape(weights)) != expected:
            raise ValueError(
                f"weights has shape {tuple(np.shape(weights))}; expected {expected}, one weight "
                "per example of x"
            )
        weights = jnp.asarray(weights)
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    if not batched:
        x, labels = x[None], labels[None]
        weights = None if weights is None else weights[None]
    return x, labels, weights, batched
