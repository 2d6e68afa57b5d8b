"""The backward pass derived by hand, layer by layer, beside ``jax.grad``.

With a_0 = x, z_l = a_{l-1} @ W_l + b_l, a_l = phi(z_l) for the hidden layers and logits
z_L, the mean loss over a batch of B examples has the gradients

    delta_L = softmax(z_L) - Y          (softmax cross-entropy)
    delta_L = sigmoid(z_L) - Y          (logistic cost of sigmoid output units)
    delta_l = (delta_{l+1} @ W_{l+1}.T) * phi'(z_l)
    dW_l    = a_{l-1}.T @ delta_l / B + l2 * W_l
    db_l    = sum over the batch of delta_l / B

Dropout multiplies a_l by its mask m_l on the way forward, so the same mask multiplies
delta_{l+1} @ W_{l+1}.T on the way back. With per-example weights w (a padded tail batch),
Y - P rows are scaled by w and B becomes sum(w).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxmlp import _validation
from jaxmlp.losses import LossOptions, check_loss_arguments, one_hot_targets, scored_pass
from jaxmlp.model import ACTIVATIONS, Params

__all__ = [
    "backprop",
]


def backprop(
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
) -> tuple[Float[Array, ""], Params]:
    """``(loss, grads)`` by the hand-derived backward pass; the same values and pytree as
    ``jax.value_and_grad(jaxmlp.loss)`` with the same arguments (and the same dropout key).

    Takes a batch or one example, like [`jaxmlp.loss`][], and works inside the caller's
    ``jit`` and ``vmap`` (the options are Python values, static under ``jit``).

    Examples:
        >>> import jax, jax.numpy as jnp, jaxmlp
        >>> params = jaxmlp.init_mlp(jax.random.key(0), (4, 3, 2))
        >>> x, y = jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1])
        >>> value, grads = jaxmlp.backprop(params, x, y)
        >>> autodiff = jax.grad(jaxmlp.loss)(params, x, y)
        >>> round(float(value), 4), bool(jnp.allclose(grads[0]["w"], autodiff[0]["w"], atol=1e-6))
        (0.6732, True)
    """
    options = LossOptions(
        activation=activation,
        output=output,
        l2=l2,
        dropout_rate=dropout_rate,
        input_dropout_rate=input_dropout_rate,
    )
    x, labels, weights, _ = check_loss_arguments(params, x, labels, key, weights)
    value, grads, _ = batch_backprop(options, params, x, labels, key=key, weights=weights)
    return value, grads


def batch_backprop(
    options: LossOptions,
    params: Params,
    x: Array,
    labels: Array,
    *,
    key: PRNGKeyArray | None = None,
    weights: Array | None = None,
) -> tuple[Array, Params, Array]:
    """``(loss, grads, logits)`` of a batch (batch, n_in) by the backward pass above: what
    [`backprop`][jaxmlp.backprop.backprop] computes once its arguments are checked; it checks
    nothing."""
    loss, masks, layer_inputs, pre_activations = scored_pass(
        options, params, x, labels, key=key, weights=weights
    )
    logits = pre_activations[-1]
    l2 = options.l2
    delta = output_delta(logits, labels, options.output)
    if weights is None:
        batch = jnp.asarray(x.shape[0], logits.dtype)
    else:
        weights = weights.astype(logits.dtype)
        delta = delta * weights[:, None]
        batch = jnp.maximum(jnp.sum(weights), 1)
    deltas = backward_pass(params, pre_activations, masks, delta, activation=options.activation)
    grads: Params = []
    for layer, a, d in zip(params, layer_inputs, deltas, strict=True):
        dw = a.T @ d / batch
        if not _validation.is_static_zero(l2):
            dw = dw + l2 * layer["w"]
        grads.append({"w": dw, "b": jnp.sum(d, axis=0) / batch})
    return loss, grads, logits


def output_delta(logits: Array, labels: Array, output: str) -> Array:
    """delta_L = dL_i / dz_L for each example's own loss: softmax(z) - y for softmax
    cross-entropy, sigmoid(z) - y for the logistic cost of sigmoid units; (batch, classes)."""
    targets = one_hot_targets(labels, logits.shape[-1], logits.dtype)
    if output == "softmax":
        return jax.nn.softmax(logits, axis=-1) - targets
    return jax.nn.sigmoid(logits) - targets


def backward_pass(
    params: Params,
    pre_activations: list[Array],
    masks: list[Array | None],
    delta: Array,
    *,
    activation: str,
) -> list[Array]:
    """Every layer's delta_l = dL / dz_l, from the output layer's ``delta`` down:
    delta_l = (delta_{l+1} @ W_{l+1}.T) * m_l * phi'(z_l), with m_l the dropout mask on a_l.
    Row i of each delta is example i's own (scaled as ``delta`` is); first layer first."""
    phi = ACTIVATIONS[activation]
    deltas = [delta]
    for index in range(len(params) - 1, 0, -1):
        delta = delta @ params[index]["w"].T
        mask = masks[index]
        if mask is not None:
            delta = delta * mask
        delta = delta * phi.derivative(pre_activations[index - 1])
        deltas.append(delta)
    return deltas[::-1]
